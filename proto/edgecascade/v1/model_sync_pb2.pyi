from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class GetManifestRequest(_message.Message):
    __slots__ = ("family", "version")
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    family: str
    version: int
    def __init__(self, family: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class WatchManifestsRequest(_message.Message):
    __slots__ = ("family", "after_version")
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    AFTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    family: str
    after_version: int
    def __init__(self, family: _Optional[str] = ..., after_version: _Optional[int] = ...) -> None: ...

class ManifestResponse(_message.Message):
    __slots__ = ("family", "version", "manifest_json", "manifest_sha256", "current")
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_SHA256_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    family: str
    version: int
    manifest_json: str
    manifest_sha256: str
    current: bool
    def __init__(self, family: _Optional[str] = ..., version: _Optional[int] = ..., manifest_json: _Optional[str] = ..., manifest_sha256: _Optional[str] = ..., current: _Optional[bool] = ...) -> None: ...

class FetchArtifactRequest(_message.Message):
    __slots__ = ("sha256", "offset")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    offset: int
    def __init__(self, sha256: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...

class ArtifactChunk(_message.Message):
    __slots__ = ("offset", "data", "total_size")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    total_size: int
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ..., total_size: _Optional[int] = ...) -> None: ...
