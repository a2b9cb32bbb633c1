"""The edge agent's state: its family's manifest, the compiled edge model, the cascade."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from edgecascade.cloud.common.errors import InternalFailure, RequestError
from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.paths import artifacts_root, edge_model_file, family_dir
from edgecascade.cloud.common.preprocessing import (
    MAX_IMAGE_PIXELS,
    Images,
    InvalidImage,
    pixel_limit,
)
from edgecascade.edge.serving.limits import InFlightLimit, Overloaded
from edgecascade.edge.serving.metrics import Metrics
from edgecascade.edge.serving.runtime import EdgeModel, PerformanceHint
from edgecascade.router.cascade.breaker import CircuitBreaker
from edgecascade.router.cascade.cascade import Answers, Cascade
from edgecascade.router.cascade.cloud_client import CloudClient
from edgecascade.router.cascade.latency import LatencyTracker
from edgecascade.router.policy.policies import policy_from_manifest

log = logging.getLogger(__name__)
WARM_UP_RUNS = 3
# The failure label (Triton's) of a request refused for one of these; any other: OTHER.
FAILURE_REASONS: dict[type[Exception], str] = {
    Overloaded: "REJECTED",
    InvalidImage: "INVALID_ARGUMENT",
}


class EdgeSettings(BaseSettings):
    """How an edge agent runs; validated at start. Environment variables EDGECASCADE_<FIELD>
    apply (edge.config.load_settings adds a TOML file and command-line options)."""

    model_config = SettingsConfigDict(env_prefix="EDGECASCADE_", extra="forbid")

    family: str = "fashion"
    artifacts: Path = Field(default_factory=artifacts_root)
    device: str = "CPU"
    hint: PerformanceHint = "LATENCY"
    precision: Literal["int8", "fp32"] = Field(
        "int8", description="edge IR: INT8 or FP32 reference"
    )
    cloud_url: str | None = Field(None, description="host:port of Triton or a router gateway")
    sync_url: str | None = Field(
        None, description="host:port of a ModelSync service (the router gateway): follow updates"
    )
    cloud_timeout_s: float = Field(1.0, gt=0)
    breaker_failures: int = Field(
        5, ge=1, description="cloud failures in a row that open the breaker"
    )
    breaker_cooldown_s: float = Field(
        0.5, ge=0, description="how long an open breaker waits to probe"
    )
    threshold: float | None = Field(None, ge=0, le=1, description="overrides the manifest's")
    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535)
    default_top_k: int = Field(5, ge=1)
    stream_window: int = Field(8, ge=1, description="frames of one stream in flight at once")
    max_in_flight: int = Field(
        64, ge=1, description="requests answered at once; more: RESOURCE_EXHAUSTED"
    )
    max_batch: int = Field(32, ge=1, description="images in one KServe ModelInfer request")
    max_message_bytes: int = Field(16 << 20, ge=1024, description="largest gRPC message either way")
    grace_s: float = Field(5.0, ge=0, description="time in-flight calls get to finish on shutdown")
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Prometheus /metrics HTTP port; 0: off"
    )
    fold_preprocessing: bool = Field(
        True, description="crop and resize frames inside the edge model (OpenVINO), not in cv2"
    )
    max_image_pixels: int = Field(
        MAX_IMAGE_PIXELS,
        ge=1,
        description="largest image (height x width, from its header, or once resized) answered; "
        "more: INVALID_ARGUMENT",
    )


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
    in_flight: int = 0
    _drained: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def __post_init__(self) -> None:
        self._drained.set()

    @contextmanager
    def serving(self) -> Iterator[Cascade]:
        """The cascade, with this request counted in flight on the deployment while it runs."""
        self.in_flight += 1
        self._drained.clear()
        try:
            yield self.cascade
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
    rollback returns to, from the edge cache)."""

    settings: EdgeSettings
    deployment: Deployment
    limit: InFlightLimit
    metrics: Metrics
    breaker: CircuitBreaker
    latency: LatencyTracker
    previous: Manifest | None = None
    update_error: str = ""
    counters: Counters = field(default_factory=Counters)

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
        deployment = await _deploy(settings, folder, breaker, latency)
        limit = InFlightLimit(settings.max_in_flight)
        metrics = Metrics(deployment.manifest, lambda: limit.current)
        return cls(settings, deployment, limit, metrics, breaker, latency)

    async def activate(self, folder: Path) -> Deployment:
        """Verify, compile and warm up the pair in `folder`, then swap it in. On any failure
        the serving pair stays, `update_error` says why, and the error is raised."""
        try:
            deployment = await _deploy(self.settings, folder, self.breaker, self.latency)
        except Exception as e:
            self.update_error = f"{folder.name}: {e}"
            log.error("update to %s failed, still serving %s: %s", folder, self.manifest.version, e)
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

    async def answer(
        self,
        decode: Callable[[], Images],
        *,
        received_at: float,
        deadline: float | None = None,
    ) -> Answers:
        """One request (whichever API it came by): admit it, decode its images, run them
        through the cascade as one batch, count the outcome. Raises Overloaded past
        max_in_flight, InvalidImage for unreadable input (or one above max_image_pixels) and
        InternalFailure for anything else (logged); times are time.perf_counter(). Decoding runs
        in a thread, so a slow image does not hold up other calls."""
        try:
            with (
                self.limit.admit(),
                pixel_limit(self.settings.max_image_pixels),
                self.deployment.serving() as cascade,  # the whole request runs on one pair
            ):
                images = await asyncio.to_thread(decode)  # the thread sees the pixel limit
                answers = await cascade.classify_batch(
                    images, received_at=received_at, deadline=deadline
                )
        except Exception as e:
            self.counters.errors += isinstance(e, InvalidImage)
            self.metrics.failed(FAILURE_REASONS.get(type(e), "OTHER"))
            if isinstance(e, RequestError):
                raise
            raise InternalFailure.logged("answering a request", e) from e
        self.counters.record(answers)
        self.metrics.answered(answers, time.perf_counter() - received_at)
        return answers


async def _deploy(
    settings: EdgeSettings, folder: Path, breaker: CircuitBreaker, latency: LatencyTracker
) -> Deployment:
    """A verified, compiled and warmed-up deployment of the pair in `folder`; the cloud
    endpoint's breaker and latency history carry over from one pair to the next."""
    manifest = Manifest.load(folder / "manifest.json")
    if manifest.family != settings.family:
        raise ValueError(f"{folder} holds family {manifest.family!r}, not {settings.family!r}")
    await asyncio.to_thread(manifest.verify, folder)
    policy = policy_from_manifest(manifest.policy, settings.threshold)  # before compiling
    xml = edge_model_file(folder, settings.precision)
    fold = manifest.edge.preprocessing if settings.fold_preprocessing else None
    model = await asyncio.to_thread(EdgeModel, xml, settings.device, settings.hint, fold=fold)
    blank = np.zeros(manifest.edge.input_shape, np.uint8)
    for _ in range(WARM_UP_RUNS):
        logits = await model.infer(blank)
        shaped = logits.shape[-1:] == (len(manifest.labels),) and logits.ndim <= 2  # [members,] K
        if not shaped or not np.isfinite(logits).all():
            raise ValueError(f"edge model warm-up gave logits of shape {logits.shape}")
    cloud = CloudClient(settings.cloud_url, manifest.cloud) if settings.cloud_url else None
    cascade = Cascade(
        manifest,
        model.infer_batch,
        policy,
        cloud,
        settings.cloud_timeout_s,
        latency=latency,
        breaker=breaker,
        edge_folds=fold is not None,
    )
    if cloud:
        cascade.mismatch = await cloud.pairing_problem(manifest)
        if cascade.mismatch:
            log.warning("%s: no escalation: %s", manifest.edge.key, cascade.mismatch)
    return Deployment(manifest, folder, model, cascade, cloud)
