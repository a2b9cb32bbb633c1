from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class UploadedExample(_message.Message):
    __slots__ = ("edge_id", "sha256", "family", "edge_version", "kind", "image_shape", "image", "cloud_probabilities", "edge_probabilities", "seen_at")
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    EDGE_VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SHAPE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CLOUD_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    EDGE_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    SEEN_AT_FIELD_NUMBER: _ClassVar[int]
    edge_id: str
    sha256: str
    family: str
    edge_version: str
    kind: str
    image_shape: _containers.RepeatedScalarFieldContainer[int]
    image: bytes
    cloud_probabilities: _containers.RepeatedScalarFieldContainer[float]
    edge_probabilities: _containers.RepeatedScalarFieldContainer[float]
    seen_at: float
    def __init__(self, edge_id: _Optional[str] = ..., sha256: _Optional[str] = ..., family: _Optional[str] = ..., edge_version: _Optional[str] = ..., kind: _Optional[str] = ..., image_shape: _Optional[_Iterable[int]] = ..., image: _Optional[bytes] = ..., cloud_probabilities: _Optional[_Iterable[float]] = ..., edge_probabilities: _Optional[_Iterable[float]] = ..., seen_at: _Optional[float] = ...) -> None: ...

class UploadExamplesResponse(_message.Message):
    __slots__ = ("kept", "duplicates", "edge_bytes", "quota_bytes")
    KEPT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    EDGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    QUOTA_BYTES_FIELD_NUMBER: _ClassVar[int]
    kept: int
    duplicates: int
    edge_bytes: int
    quota_bytes: int
    def __init__(self, kept: _Optional[int] = ..., duplicates: _Optional[int] = ..., edge_bytes: _Optional[int] = ..., quota_bytes: _Optional[int] = ...) -> None: ...

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
