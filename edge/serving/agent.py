"""The edge agent's state: its family's manifest, the compiled edge model, the cascade."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from edgecascade.cloud.common import signing, tracing
from edgecascade.cloud.common.errors import InternalFailure, RequestError, UserError
from edgecascade.cloud.common.examples import ExampleStore
from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.paths import edge_model_file, family_dir
from edgecascade.cloud.common.preprocessing import (
    Images,
    InvalidImage,
    decode_in_turn,
    pixel_limit,
)
from edgecascade.cloud.common.signing import SignatureError, TrustedKeys
from edgecascade.cloud.common.transport import PLAINTEXT, Transport
from edgecascade.edge.serving.batching import Batcher, BatchPolicy
from edgecascade.edge.serving.collection import Collector, store_path
from edgecascade.edge.serving.limits import InFlightLimit, Overloaded
from edgecascade.edge.serving.metrics import Metrics
from edgecascade.edge.serving.runtime import EdgeModel
from edgecascade.edge.serving.security import cloud_transport, insecure_hops, trusted_keys
from edgecascade.edge.serving.settings import EdgeSettings
from edgecascade.edge.serving.statistics import Stamps
from edgecascade.router.cascade.audit import AgreementTracker, Auditor
from edgecascade.router.cascade.breaker import CircuitBreaker
from edgecascade.router.cascade.budget import EscalationBudget
from edgecascade.router.cascade.cascade import Answers, Cascade
from edgecascade.router.cascade.cloud_client import CloudClient
from edgecascade.router.cascade.latency import LatencyTracker
from edgecascade.router.policy.policies import policy_from_manifest
from edgecascade.router.sync.uploader import ExampleUploader
from edgecascade.v1 import cascade_pb2 as pb

log = logging.getLogger(__name__)
WARM_UP_RUNS = 3
Response = TypeVar("Response")


def failure_reason(error: BaseException) -> str:
    """Triton's failure reason for a request that raised `error`: REJECTED (overload), OTHER
    (the request was wrong), CANCELED (the caller went away), BACKEND (the cascade failed)."""
    if isinstance(error, Overloaded):
        return "REJECTED"
    if isinstance(error, asyncio.CancelledError):
        return "CANCELED"
    return "OTHER" if isinstance(error, RequestError) else "BACKEND"


@dataclass
class Counters:
    requests: int = 0
    escalations: int = 0
    degraded: int = 0
    errors: int = 0
    bytes_to_cloud: int = 0

    def record(self, answers: Answers) -> None:
        """One request's answers (each image counts)."""
        self.requests += len(answers)
        self.escalations += answers.escalations
        self.degraded += answers.degraded
        self.bytes_to_cloud += answers.escalations * answers.bytes_per_escalation


@dataclass
class Deployment:
    """One model pair ready to serve: a request runs start to end on the deployment it began on
    (`serving`). Replaced, it is closed once the requests in flight on it have finished; its
    compiled models go with the last reference to it."""

    manifest: Manifest
    folder: Path
    model: EdgeModel
    cascade: Cascade
    cloud: CloudClient | None
    batching: BatchPolicy = BatchPolicy(enabled=False)
    in_flight: int = 0
    batcher: Batcher = field(init=False, repr=False)
    _drained: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def __post_init__(self) -> None:
        self.batcher = Batcher(self.cascade, self.batching)
        self._drained.set()

    @contextmanager
    def serving(self) -> Iterator[Batcher]:
        """The cascade's batcher, with this request counted in flight on the deployment while
        it runs."""
        self.in_flight += 1
        self._drained.clear()
        try:
            yield self.batcher
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._drained.set()

    async def close(self) -> None:
        """Wait until no request is in flight on this deployment, then close its cloud client."""
        await self._drained.wait()
        if self.cloud:
            await self.cloud.close()


@dataclass
class EdgeAgent:
    """The agent's state. `deployment` is swapped atomically (one assignment on the event
    loop) when a new pair has been verified, compiled and warmed up; the one it replaces is
    closed once its requests have finished. `previous` is the pair replaced last (the one a
    rollback returns to, from the edge cache). The escalation budget, the auditor and the
    collector of examples (with its uploader to sync_url) carry over from pair to pair."""

    settings: EdgeSettings
    deployment: Deployment
    limit: InFlightLimit
    metrics: Metrics
    breaker: CircuitBreaker
    latency: LatencyTracker
    trusted: TrustedKeys | None = None  # None: unsigned manifests are served (allow_unsigned)
    transport: Transport = PLAINTEXT  # of the calls to the cloud
    previous: Manifest | None = None
    update_error: str = ""
    counters: Counters = field(default_factory=Counters)
    feedback: Feedback = field(default_factory=lambda: Feedback())

    @property
    def manifest(self) -> Manifest:
        return self.deployment.manifest

    @property
    def model(self) -> EdgeModel:
        return self.deployment.model

    @property
    def cascade(self) -> Cascade:
        return self.deployment.cascade

    @property
    def cloud(self) -> CloudClient | None:
        return self.deployment.cloud

    @classmethod
    async def load(cls, settings: EdgeSettings, folder: Path | None = None) -> EdgeAgent:
        """Serve the pair in `folder` (default: the family's build under the artifacts root);
        call inside the event loop that will serve."""
        folder = folder or family_dir(settings.family, settings.artifacts)
        if not (folder / "manifest.json").exists():
            raise FileNotFoundError(
                f"no manifest for family {settings.family!r} in {folder}: "
                f"run `edgecascade models build --family {settings.family}` or give --sync-url"
            )
        breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown_s)
        latency = LatencyTracker()
        trusted, transport = trusted_keys(settings), cloud_transport(settings)
        feedback = Feedback.of(settings)
        try:
            deployment = await _deploy(
                settings, folder, breaker, latency, trusted, transport, feedback
            )
        except SignatureError as e:
            raise UserError(
                f"{folder / 'manifest.json'}: {e} (--allow-unsigned serves it anyway)"
            ) from None
        limit = InFlightLimit(settings.max_in_flight)
        metrics = Metrics(deployment.manifest, lambda: limit.current, insecure_hops(settings))
        if feedback.auditor:
            metrics.watch_audit(feedback.auditor.tracker)
        if feedback.collector and settings.sync_url:
            feedback.uploader = ExampleUploader(feedback.collector.store, settings.edge_id)
            metrics.watch_uploads(feedback.uploader)
            channel = transport.aio_channel(settings.sync_url)
            feedback.uploading = asyncio.create_task(
                feedback.uploader.run(channel, settings.upload_interval_s)
            )
        return cls(
            settings,
            deployment,
            limit,
            metrics,
            breaker,
            latency,
            trusted,
            transport,
            feedback=feedback,
        )

    @property
    def bytes_to_cloud(self) -> int:
        """Request payload bytes sent to the cloud: escalations and audits."""
        auditor = self.feedback.auditor
        return self.counters.bytes_to_cloud + (auditor.bytes_sent if auditor else 0)

    def upload_status(self) -> dict[str, Any]:
        """GetStatus' upload fields: examples the cloud side kept and already had, failed
        uploads and why the last one failed (all 0 and "" when the agent uploads nothing)."""
        uploader = self.feedback.uploader
        if uploader is None:
            return {}
        return {
            "examples_uploaded": uploader.uploaded,
            "examples_already_kept": uploader.duplicates,
            "upload_failures": uploader.failures,
            "upload_error": uploader.error,
        }

    def audit_status(self) -> list[pb.AuditAgreement]:
        """Agreement with the cloud per family and edge version audited (GetStatus.audit)."""
        if self.feedback.auditor is None:
            return []
        tracker = self.feedback.auditor.tracker
        return [
            pb.AuditAgreement(
                family=entry.family,
                edge_version=entry.edge_version,
                audited=entry.audited,
                agreed=entry.agreed,
                agreement=entry.rate,
                lower=entry.interval[0],
                upper=entry.interval[1],
                below_bound=tracker.below(entry),
            )
            for entry in tracker.entries.values()
        ]

    async def activate(self, folder: Path) -> Deployment:
        """Verify, compile and warm up the pair in `folder`, then swap it in. On any failure
        the serving pair stays, `update_error` says why, and the error is raised."""
        try:
            deployment = await _deploy(
                self.settings,
                folder,
                self.breaker,
                self.latency,
                self.trusted,
                self.transport,
                self.feedback,
            )
        except Exception as e:
            self.update_failed(
                "refused" if isinstance(e, SignatureError) else "activate", f"{folder.name}: {e}"
            )
            raise
        replaced, self.deployment = self.deployment, deployment
        self.previous = replaced.manifest
        self.update_error = ""
        self.metrics.serving(deployment.manifest)
        log.info(
            "now serving %s v%d: edge %s, cloud %s",
            deployment.manifest.family,
            deployment.manifest.version,
            deployment.manifest.edge.key,
            deployment.manifest.cloud.key,
        )
        in_flight = replaced.in_flight
        await replaced.close()
        log.info(
            "closed the deployment of v%d (%s) after its last %d requests in flight",
            replaced.manifest.version,
            replaced.folder,
            in_flight,
        )
        return deployment

    def update_failed(self, reason: str, message: str) -> None:
        """An update not applied: `update_error`, a log line and the metric say why; the
        serving pair stays."""
        self.update_error = message
        self.metrics.update_failed(reason)
        log.error(
            "update not applied (%s), still serving v%d: %s", reason, self.manifest.version, message
        )

    async def answer(
        self,
        decode: Callable[[], Images],
        *,
        received_at: float,
        deadline: float | None = None,
        payload_bytes: int | None = None,
    ) -> Answers:
        """`respond` with the answers themselves as the response."""
        return await self.respond(
            decode,
            lambda answers: answers,
            received_at=received_at,
            deadline=deadline,
            payload_bytes=payload_bytes,
        )

    async def respond(
        self,
        decode: Callable[[], Images],
        build: Callable[[Answers], Response],
        *,
        received_at: float,
        deadline: float | None = None,
        payload_bytes: int | None = None,
    ) -> Response:
        """One request (whichever API it came by): admit it, decode its images, run them
        through the cascade as one batch, `build` the response, count the outcome in the
        statistics of the version that answered. Raises Overloaded past max_in_flight,
        InvalidImage for unreadable input (or one above max_image_pixels) and InternalFailure
        for anything else (logged); times are time.perf_counter(). Decoding runs on the event
        loop only for a small request of raw pixels (`payload_bytes`, the request's size; None:
        unknown), else in a thread, so a slow image does not hold up other calls
        (`decode_in_turn`), and an image of a new shape waits for its folded variant before it
        joins a batch, so the others there do not."""
        received = int(received_at * 1e9)
        deployment = self.deployment  # the whole request runs on one pair
        version = str(deployment.manifest.version)
        try:
            with (
                self.limit.admit(),
                pixel_limit(self.settings.max_image_pixels),
                deployment.serving() as batcher,
                self.metrics.statistics.pending(version),
            ):
                admitted = time.perf_counter_ns()
                with tracing.span("decode"):  # the places it runs in see the pixel limit
                    images = await decode_in_turn(decode, payload_bytes)
                decoded = time.perf_counter_ns()
                await deployment.model.folds_ready(images)  # a new shape waits alone
                batched = await batcher.classify(images, received_at=received_at, deadline=deadline)
                answers = batched.answers
                inferred = time.perf_counter_ns()
                response = build(answers)
        except (Exception, asyncio.CancelledError) as e:
            self.counters.errors += isinstance(e, InvalidImage)
            self.metrics.failed(version, failure_reason(e), time.perf_counter_ns() - received)
            if isinstance(e, (RequestError, asyncio.CancelledError)):
                raise
            raise InternalFailure.logged("answering a request", e) from e
        self.counters.record(answers)
        responded = time.perf_counter_ns()
        stamps = Stamps(received, admitted, decoded, inferred, responded, batched.queued_ns)
        self.metrics.answered(answers, stamps, batched.batch if batched.leader else 0)
        return response


@dataclass
class Feedback:
    """What the agent sends the cloud beyond escalations and keeps of its answers: the
    escalation budget, the auditor, the collector of examples, its uploader and upload task."""

    budget: EscalationBudget | None = None
    auditor: Auditor | None = None
    collector: Collector | None = None
    uploader: ExampleUploader | None = None
    uploading: asyncio.Task[None] | None = None

    async def close(self) -> None:
        """Stop uploading, then write what is still queued into the store and close it."""
        if self.uploading:
            self.uploading.cancel()
        if self.collector:
            await asyncio.to_thread(self.collector.close)

    @classmethod
    def of(cls, settings: EdgeSettings) -> Feedback:
        limited = settings.escalations_per_second or settings.escalations_per_day
        budget = EscalationBudget(
            settings.escalations_per_second, settings.escalations_per_day, settings.escalation_burst
        )
        tracker = AgreementTracker(settings.audit_min_agreement)
        store = settings.examples_file or store_path(settings.artifacts, settings.family)
        return cls(
            budget if limited else None,
            Auditor(settings.audit_rate, tracker) if settings.audit_rate else None,
            Collector(ExampleStore(store, settings.examples_max_bytes))
            if settings.collect and settings.cloud_url
            else None,
        )


async def _deploy(
    settings: EdgeSettings,
    folder: Path,
    breaker: CircuitBreaker,
    latency: LatencyTracker,
    trusted: TrustedKeys | None,
    transport: Transport,
    feedback: Feedback,
) -> Deployment:
    """A verified, compiled and warmed-up deployment of the pair in `folder`, its manifest
    signed by a `trusted` key (any manifest when None; SignatureError otherwise); the cloud
    endpoint's breaker and latency history carry over from one pair to the next."""
    text = (folder / "manifest.json").read_bytes()
    manifest = (
        Manifest.model_validate_json(text)
        if trusted is None
        else signing.verify_json(text, trusted)
    )
    if manifest.family != settings.family:
        raise ValueError(f"{folder} holds family {manifest.family!r}, not {settings.family!r}")
    await asyncio.to_thread(manifest.verify, folder)
    policy = policy_from_manifest(manifest.policy, settings.threshold)  # before compiling
    xml = edge_model_file(folder, settings.precision)
    fold = manifest.edge.preprocessing if settings.fold_preprocessing else None
    model = await asyncio.to_thread(
        EdgeModel,
        xml,
        settings.device,
        settings.hint,
        fold=fold,
        plugin_config=settings.plugin_config,
        nireq=settings.nireq,
    )
    blank = np.zeros(manifest.edge.input_shape, np.uint8)
    for _ in range(WARM_UP_RUNS):
        logits = await model.infer(blank)
        shaped = logits.shape[-1:] == (len(manifest.labels),) and logits.ndim <= 2  # [members,] K
        if not shaped or not np.isfinite(logits).all():
            raise ValueError(f"edge model warm-up gave logits of shape {logits.shape}")
    cloud = (
        CloudClient(settings.cloud_url, manifest.cloud, transport) if settings.cloud_url else None
    )
    cascade = Cascade(
        manifest,
        model.infer_batch,
        policy,
        cloud,
        settings.cloud_timeout_s,
        latency=latency,
        breaker=breaker,
        edge_folds=fold is not None,
        budget=feedback.budget,
        auditor=feedback.auditor,
        sink=feedback.collector,
    )
    if cloud:
        cascade.mismatch = await cloud.pairing_problem(manifest)
        if cascade.mismatch:
            log.warning("%s: no escalation: %s", manifest.edge.key, cascade.mismatch)
    return Deployment(manifest, folder, model, cascade, cloud, BatchPolicy.of(settings))
