from edgecascade.v1 import cascade_pb2 as _cascade_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FrameResult(_message.Message):
    __slots__ = ("source", "frame_index", "position_ms", "captured_at", "dropped", "response")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    POSITION_MS_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_AT_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    source: str
    frame_index: int
    position_ms: float
    captured_at: float
    dropped: int
    response: _cascade_pb2.ClassifyResponse
    def __init__(self, source: _Optional[str] = ..., frame_index: _Optional[int] = ..., position_ms: _Optional[float] = ..., captured_at: _Optional[float] = ..., dropped: _Optional[int] = ..., response: _Optional[_Union[_cascade_pb2.ClassifyResponse, _Mapping]] = ...) -> None: ...

class PublishAck(_message.Message):
    __slots__ = ("received",)
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    received: int
    def __init__(self, received: _Optional[int] = ...) -> None: ...
