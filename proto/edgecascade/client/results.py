"""Typed answers: what a ClassifyResponse and a GetStatusResponse say, as dataclasses."""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from typing import Any

from edgecascade.client.errors import CascadeError
from edgecascade.v1 import cascade_pb2 as pb


class Tier(enum.Enum):
    """The tier whose model gave the answer."""

    EDGE = "edge"
    CLOUD = "cloud"


class DegradedReason(enum.Enum):
    """Why an input meant for the cloud was answered at the edge; the values are the agent's
    metric labels."""

    CLOUD_UNAVAILABLE = "cloud-unavailable"
    CLOUD_TIMEOUT = "cloud-timeout"
    CLOUD_ERROR = "cloud-error"
    DEADLINE = "deadline"
    VERSION_MISMATCH = "version-mismatch"
    BUDGET = "budget"


@dataclass(frozen=True)
class Prediction:
    class_id: int
    name: str
    score: float


@dataclass(frozen=True)
class ModelVersions:
    """The model pair behind an answer: the family, "<edge model>:<version>" and
    "<Triton model>:<version>"."""

    family: str
    edge: str
    cloud: str


@dataclass(frozen=True)
class Timings:
    """Milliseconds inside the agent: decode + edge inference, the cloud round trip (0 when
    not escalated) and the whole request."""

    edge_ms: float
    cloud_ms: float
    total_ms: float


@dataclass(frozen=True)
class ClassifyResult:
    """One answer. A stream's frame that failed has `error` set and no answer: reading its
    class, name or score raises that error."""

    request_id: str
    top_k: tuple[Prediction, ...]  # best first
    tier: Tier | None  # None for a failed frame
    edge_confidence: float  # the score the routing policy compared to its threshold
    edge_class_id: int  # the edge model's top-1, whichever tier answered
    versions: ModelVersions
    timings: Timings
    degraded: bool  # meant for the cloud, answered at the edge
    degraded_reason: DegradedReason | None  # None when not degraded
    error: CascadeError | None

    @property
    def best(self) -> Prediction:
        if self.error is not None:
            raise self.error
        return self.top_k[0]

    @property
    def class_id(self) -> int:
        return self.best.class_id

    @property
    def name(self) -> str:
        return self.best.name

    @property
    def score(self) -> float:
        return self.best.score


@dataclass(frozen=True)
class BatchCount:
    """How many executions of the agent's batcher held `size` images."""

    size: int
    executions: int


@dataclass(frozen=True)
class AuditAgreement:
    """Agreement of audited confident edge answers with the cloud, with its 95% Wilson
    interval, for one family and edge model version."""

    family: str
    edge_version: str
    audited: int
    agreed: int
    agreement: float
    lower: float
    upper: float
    below_bound: bool  # `upper` is below the agent's audit_min_agreement


@dataclass(frozen=True)
class Status:
    """What an agent serves and how it has been doing (GetStatus)."""

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
    breaker: str  # "closed", "open" or "half-open"
    cloud_latency_ewma_ms: float
    cloud_latency_p95_ms: float
    manifest_version: int
    previous_version: int  # 0: none to roll back to
    update_error: str  # "" when the last update was applied
    version_mismatch: str  # "" when the cloud serves the paired version
    insecure_hops: tuple[str, ...]  # run without TLS, switched off: "agent", "cloud"
    audit: tuple[AuditAgreement, ...]
    batches: tuple[BatchCount, ...]
    queue_duration_us: int  # in the batcher's queue, all requests together
    examples_uploaded: int  # collected examples the cloud side kept
    examples_already_kept: int  # uploaded examples the cloud side already had
    upload_failures: int  # uploads that stopped with an error
    upload_error: str  # why the last upload failed ("" when it went through)


def _versions(versions: pb.ModelVersions) -> ModelVersions:
    return ModelVersions(versions.family, versions.edge, versions.cloud)


def classify_result(response: pb.ClassifyResponse) -> ClassifyResult:
    reason = response.degraded_reason_code
    return ClassifyResult(
        request_id=response.request_id,
        top_k=tuple(Prediction(p.class_id, p.name, p.score) for p in response.top_k),
        tier=Tier[pb.Tier.Name(response.tier)] if response.tier else None,
        edge_confidence=response.edge_confidence,
        edge_class_id=response.edge_class_id,
        versions=_versions(response.versions),
        timings=Timings(
            response.timings.edge_ms, response.timings.cloud_ms, response.timings.total_ms
        ),
        degraded=response.degraded,
        degraded_reason=DegradedReason[pb.DegradedReason.Name(reason)] if reason else None,
        error=CascadeError.from_frame(response.error) if response.HasField("error") else None,
    )


def status(response: pb.GetStatusResponse) -> Status:
    plain: dict[str, Any] = {
        f.name: getattr(response, f.name) for f in fields(Status) if f.name != "versions"
    }
    plain["insecure_hops"] = tuple(response.insecure_hops)
    plain["audit"] = tuple(
        AuditAgreement(
            a.family,
            a.edge_version,
            a.audited,
            a.agreed,
            a.agreement,
            a.lower,
            a.upper,
            a.below_bound,
        )
        for a in response.audit
    )
    plain["batches"] = tuple(BatchCount(b.size, b.executions) for b in response.batches)
    return Status(versions=_versions(response.versions), **plain)
