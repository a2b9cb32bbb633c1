"""One request through the cascade: edge model, policy, and the cloud when it is worth it."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from cloud.manifest import Manifest
from cloud.preprocessing import prepare
from router.breaker import CircuitBreaker
from router.cloud_client import CloudClient, CloudError
from router.latency import LatencyTracker
from router.policy import ScorePolicy, softmax

EdgeInfer = Callable[[np.ndarray], Awaitable[np.ndarray]]

# Below this much time left there is no point in starting a cloud call.
MIN_CLOUD_BUDGET_S = 0.002


@dataclass(frozen=True)
class Answer:
    pair: Manifest  # the model pair that produced this answer (versions, labels)
    probabilities: np.ndarray
    tier: Literal["edge", "cloud"]
    edge_confidence: float
    edge_class_id: int
    edge_ms: float
    cloud_ms: float
    degraded_reason: str | None
    bytes_to_cloud: int

    @property
    def degraded(self) -> bool:
        return self.degraded_reason is not None

    def top_k(self, k: int) -> list[tuple[int, float]]:
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [(int(i), float(self.probabilities[i])) for i in order]


class Cascade:
    """Answers at the edge when the policy trusts the edge model, else asks the cloud.

    A cloud failure never fails the request: the edge answer comes back degraded. The cloud is
    called only when its expected latency fits the time left and the breaker lets it through,
    and never when the cloud does not hold the version the manifest pairs with the edge model
    (`mismatch` says why; escalations then come back degraded with `version-mismatch`)."""

    def __init__(
        self,
        manifest: Manifest,
        edge_infer: EdgeInfer,
        policy: ScorePolicy,
        cloud: CloudClient | None,
        cloud_timeout_s: float = 1.0,
        latency: LatencyTracker | None = None,
        breaker: CircuitBreaker | None = None,
    ):
        self.manifest = manifest
        self.policy = policy
        self.latency = latency or LatencyTracker()
        self.breaker = breaker or CircuitBreaker()
        self._edge_infer = edge_infer
        self._cloud = cloud
        self._cloud_timeout_s = cloud_timeout_s
        self.mismatch: str | None = None

    async def classify(
        self, image: np.ndarray, *, received_at: float, deadline: float | None = None
    ) -> Answer:
        """`image` is decoded (uint8 [H, W] or [H, W, C]); times are time.perf_counter()."""
        logits = await self._edge_infer(prepare(image, self.manifest.edge.preprocessing))
        edge_probs = softmax(np.asarray(logits, np.float64))
        confidence = float(self.policy.confidence(logits))
        edge_done = time.perf_counter()
        edge = dict(
            edge_confidence=confidence,
            edge_class_id=int(edge_probs.argmax()),
            edge_ms=(edge_done - received_at) * 1e3,
        )
        if not self.policy.escalate(confidence):
            return Answer(
                self.manifest,
                edge_probs,
                "edge",
                **edge,
                cloud_ms=0.0,
                degraded_reason=None,
                bytes_to_cloud=0,
            )
        timeout = self._cloud_timeout_s
        if deadline is not None:
            timeout = min(timeout, deadline - time.perf_counter())
        if self._cloud is None:
            reason, cloud_image = "cloud-unavailable", None
        elif self.mismatch:
            reason, cloud_image = "version-mismatch", None
        elif timeout < MIN_CLOUD_BUDGET_S or not self.latency.fits(timeout):
            reason, cloud_image = "deadline", None
        elif not self.breaker.allow():
            reason, cloud_image = "cloud-unavailable", None
        else:
            cloud_image = prepare(image, self.manifest.cloud.preprocessing)
            sent = time.perf_counter()
            try:
                cloud_logits = await self._cloud.infer(cloud_image, timeout)
            except CloudError as e:
                reason = e.reason
                self._cloud_failed(reason, timeout, time.perf_counter() - sent)
            else:
                self.latency.record(time.perf_counter() - sent)
                self.breaker.success()
                return Answer(
                    self.manifest,
                    softmax(np.asarray(cloud_logits, np.float64)),
                    "cloud",
                    **edge,
                    cloud_ms=(time.perf_counter() - edge_done) * 1e3,
                    degraded_reason=None,
                    bytes_to_cloud=cloud_image.nbytes,
                )
        return Answer(
            self.manifest,
            edge_probs,
            "edge",
            **edge,
            cloud_ms=(time.perf_counter() - edge_done) * 1e3,
            degraded_reason=reason,
            bytes_to_cloud=0 if cloud_image is None else cloud_image.nbytes,
        )

    def _cloud_failed(self, reason: str, timeout_s: float, elapsed_s: float) -> None:
        """A timeout is a latency sample too; one cut short by the caller's own budget says
        nothing about the cloud's health, so only the others count towards the breaker."""
        if reason == "version-mismatch":  # the cloud is up, without our version: no outage
            self.mismatch = "the cloud does not serve the paired version"
            return
        if reason == "cloud-timeout":
            self.latency.record(elapsed_s)
            if timeout_s < self._cloud_timeout_s:
                return
        self.breaker.failure()
