from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tier(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIER_UNSPECIFIED: _ClassVar[Tier]
    EDGE: _ClassVar[Tier]
    CLOUD: _ClassVar[Tier]

class DegradedReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEGRADED_REASON_UNSPECIFIED: _ClassVar[DegradedReason]
    CLOUD_UNAVAILABLE: _ClassVar[DegradedReason]
    CLOUD_TIMEOUT: _ClassVar[DegradedReason]
    CLOUD_ERROR: _ClassVar[DegradedReason]
    DEADLINE: _ClassVar[DegradedReason]
    VERSION_MISMATCH: _ClassVar[DegradedReason]
    BUDGET: _ClassVar[DegradedReason]
TIER_UNSPECIFIED: Tier
EDGE: Tier
CLOUD: Tier
DEGRADED_REASON_UNSPECIFIED: DegradedReason
CLOUD_UNAVAILABLE: DegradedReason
CLOUD_TIMEOUT: DegradedReason
CLOUD_ERROR: DegradedReason
DEADLINE: DegradedReason
VERSION_MISMATCH: DegradedReason
BUDGET: DegradedReason

class RawImage(_message.Message):
    __slots__ = ("shape", "data")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("request_id", "encoded_image", "raw_image", "top_k", "deadline_ms")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ENCODED_IMAGE_FIELD_NUMBER: _ClassVar[int]
    RAW_IMAGE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    encoded_image: bytes
    raw_image: RawImage
    top_k: int
    deadline_ms: float
    def __init__(self, request_id: _Optional[str] = ..., encoded_image: _Optional[bytes] = ..., raw_image: _Optional[_Union[RawImage, _Mapping]] = ..., top_k: _Optional[int] = ..., deadline_ms: _Optional[float] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("class_id", "name", "score")
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    class_id: int
    name: str
    score: float
    def __init__(self, class_id: _Optional[int] = ..., name: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class ModelVersions(_message.Message):
    __slots__ = ("family", "edge", "cloud")
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    EDGE_FIELD_NUMBER: _ClassVar[int]
    CLOUD_FIELD_NUMBER: _ClassVar[int]
    family: str
    edge: str
    cloud: str
    def __init__(self, family: _Optional[str] = ..., edge: _Optional[str] = ..., cloud: _Optional[str] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("edge_ms", "cloud_ms", "total_ms")
    EDGE_MS_FIELD_NUMBER: _ClassVar[int]
    CLOUD_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    edge_ms: float
    cloud_ms: float
    total_ms: float
    def __init__(self, edge_ms: _Optional[float] = ..., cloud_ms: _Optional[float] = ..., total_ms: _Optional[float] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("request_id", "top_k", "tier", "edge_confidence", "edge_class_id", "versions", "timings", "degraded", "degraded_reason", "error", "degraded_reason_code")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    EDGE_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    EDGE_CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_REASON_CODE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    top_k: _containers.RepeatedCompositeFieldContainer[Prediction]
    tier: Tier
    edge_confidence: float
    edge_class_id: int
    versions: ModelVersions
    timings: Timings
    degraded: bool
    degraded_reason: str
    error: Error
    degraded_reason_code: DegradedReason
    def __init__(self, request_id: _Optional[str] = ..., top_k: _Optional[_Iterable[_Union[Prediction, _Mapping]]] = ..., tier: _Optional[_Union[Tier, str]] = ..., edge_confidence: _Optional[float] = ..., edge_class_id: _Optional[int] = ..., versions: _Optional[_Union[ModelVersions, _Mapping]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., degraded: _Optional[bool] = ..., degraded_reason: _Optional[str] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., degraded_reason_code: _Optional[_Union[DegradedReason, str]] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("versions", "device", "policy", "threshold", "cloud_url", "cloud_ready", "requests", "escalations", "degraded", "errors", "bytes_to_cloud", "breaker", "cloud_latency_ewma_ms", "cloud_latency_p95_ms", "manifest_version", "previous_version", "update_error", "version_mismatch", "insecure_hops", "audit", "batches", "queue_duration_us", "examples_uploaded", "examples_already_kept", "upload_failures", "upload_error")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    CLOUD_URL_FIELD_NUMBER: _ClassVar[int]
    CLOUD_READY_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ESCALATIONS_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    BYTES_TO_CLOUD_FIELD_NUMBER: _ClassVar[int]
    BREAKER_FIELD_NUMBER: _ClassVar[int]
    CLOUD_LATENCY_EWMA_MS_FIELD_NUMBER: _ClassVar[int]
    CLOUD_LATENCY_P95_MS_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    UPDATE_ERROR_FIELD_NUMBER: _ClassVar[int]
    VERSION_MISMATCH_FIELD_NUMBER: _ClassVar[int]
    INSECURE_HOPS_FIELD_NUMBER: _ClassVar[int]
    AUDIT_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DURATION_US_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_UPLOADED_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_ALREADY_KEPT_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_FAILURES_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_ERROR_FIELD_NUMBER: _ClassVar[int]
    versions: ModelVersions
    device: str
    policy: str
    threshold: float
    cloud_url: str
    cloud_ready: bool
    requests: int
    escalations: int
    degraded: int
    errors: int
    bytes_to_cloud: int
    breaker: str
    cloud_latency_ewma_ms: float
    cloud_latency_p95_ms: float
    manifest_version: int
    previous_version: int
    update_error: str
    version_mismatch: str
    insecure_hops: _containers.RepeatedScalarFieldContainer[str]
    audit: _containers.RepeatedCompositeFieldContainer[AuditAgreement]
    batches: _containers.RepeatedCompositeFieldContainer[BatchCount]
    queue_duration_us: int
    examples_uploaded: int
    examples_already_kept: int
    upload_failures: int
    upload_error: str
    def __init__(self, versions: _Optional[_Union[ModelVersions, _Mapping]] = ..., device: _Optional[str] = ..., policy: _Optional[str] = ..., threshold: _Optional[float] = ..., cloud_url: _Optional[str] = ..., cloud_ready: _Optional[bool] = ..., requests: _Optional[int] = ..., escalations: _Optional[int] = ..., degraded: _Optional[int] = ..., errors: _Optional[int] = ..., bytes_to_cloud: _Optional[int] = ..., breaker: _Optional[str] = ..., cloud_latency_ewma_ms: _Optional[float] = ..., cloud_latency_p95_ms: _Optional[float] = ..., manifest_version: _Optional[int] = ..., previous_version: _Optional[int] = ..., update_error: _Optional[str] = ..., version_mismatch: _Optional[str] = ..., insecure_hops: _Optional[_Iterable[str]] = ..., audit: _Optional[_Iterable[_Union[AuditAgreement, _Mapping]]] = ..., batches: _Optional[_Iterable[_Union[BatchCount, _Mapping]]] = ..., queue_duration_us: _Optional[int] = ..., examples_uploaded: _Optional[int] = ..., examples_already_kept: _Optional[int] = ..., upload_failures: _Optional[int] = ..., upload_error: _Optional[str] = ...) -> None: ...

class BatchCount(_message.Message):
    __slots__ = ("size", "executions")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    EXECUTIONS_FIELD_NUMBER: _ClassVar[int]
    size: int
    executions: int
    def __init__(self, size: _Optional[int] = ..., executions: _Optional[int] = ...) -> None: ...

class AuditAgreement(_message.Message):
    __slots__ = ("family", "edge_version", "audited", "agreed", "agreement", "lower", "upper", "below_bound")
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    EDGE_VERSION_FIELD_NUMBER: _ClassVar[int]
    AUDITED_FIELD_NUMBER: _ClassVar[int]
    AGREED_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    BELOW_BOUND_FIELD_NUMBER: _ClassVar[int]
    family: str
    edge_version: str
    audited: int
    agreed: int
    agreement: float
    lower: float
    upper: float
    below_bound: bool
    def __init__(self, family: _Optional[str] = ..., edge_version: _Optional[str] = ..., audited: _Optional[int] = ..., agreed: _Optional[int] = ..., agreement: _Optional[float] = ..., lower: _Optional[float] = ..., upper: _Optional[float] = ..., below_bound: _Optional[bool] = ...) -> None: ...
