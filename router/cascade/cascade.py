"""Requests through the cascade: edge model, policy, and the cloud when it is worth it; a batch
of images takes one edge inference and at most one cloud call."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from edgecascade.cloud.common import tracing
from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.preprocessing import (
    Image,
    Images,
    color_groups,
    off_loop,
    prepare_batch,
    with_mirrors,
)
from edgecascade.cloud.common.probabilities import softmax
from edgecascade.router.cascade.audit import Auditor
from edgecascade.router.cascade.breaker import CircuitBreaker
from edgecascade.router.cascade.budget import EscalationBudget
from edgecascade.router.cascade.cloud_client import CloudClient, CloudError
from edgecascade.router.cascade.degraded import DegradedReason
from edgecascade.router.cascade.latency import LatencyTracker
from edgecascade.router.policy.policies import ScorePolicy, member_logits
from edgecascade.v1 import cascade_pb2 as pb

# uint8 [N, H, W, C] prepared images -> logits [N, classes] ([N, members, classes] for an
# ensemble), in one inference. An edge model that folds preprocessing takes colour-converted
# frames of one shape at any size instead.
EdgeInfer = Callable[[NDArray[Any]], Awaitable[NDArray[Any]]]
log = logging.getLogger(__name__)


class ExampleSink(Protocol):
    """Takes inputs the cloud answered (escalated or audited) without blocking the caller."""

    def collect(
        self,
        kind: Literal["escalated", "audit"],
        pair: Manifest,
        images: list[Image],
        edge_probabilities: NDArray[Any],
        cloud_probabilities: NDArray[Any],
    ) -> None: ...


# Below this much time left there is no point in starting a cloud call.
MIN_CLOUD_BUDGET_S = 0.002
# Kept back from a cloud call's share of the caller's deadline: the time to answer at the edge
# after the call gives up, so that a caller is answered (degraded) before its deadline passes.
# (20 ms was too little on busy cores: 1 of 478 calls with a 0.3 s deadline missed it.)
ANSWER_RESERVE_S = 0.05


@dataclass(frozen=True)
class Answer:
    pair: Manifest  # the model pair that produced this answer (versions, labels)
    probabilities: NDArray[Any]
    tier: Literal["edge", "cloud"]
    edge_confidence: float
    edge_class_id: int
    edge_ms: float
    cloud_ms: float
    degraded_reason: DegradedReason | None
    bytes_to_cloud: int

    @property
    def degraded(self) -> bool:
        return self.degraded_reason is not None

    @property
    def degraded_reason_code(self) -> pb.DegradedReason:
        """`degraded_reason` on the wire: DEGRADED_REASON_UNSPECIFIED when not degraded."""
        reason = self.degraded_reason
        return pb.DEGRADED_REASON_UNSPECIFIED if reason is None else reason.code

    def top_k(self, k: int) -> list[tuple[int, float]]:
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [(int(i), float(self.probabilities[i])) for i in order]


@dataclass(frozen=True)
class Answers:
    """A batch's answers as arrays, row i for image i (`answers[i]` is image i's Answer). The
    escalated images went to the cloud in one call, so they share its outcome: the cloud
    answered them all (`degraded_reason` None) or none, and they come back degraded."""

    pair: Manifest
    probabilities: NDArray[Any]  # [N, K], the answering tier's
    edge_confidence: NDArray[Any]  # [N]
    edge_class_id: NDArray[Any]  # [N]
    escalated: NDArray[Any]  # bool [N]: the policy sent these towards the cloud
    edge_ms: float
    cloud_ms: float  # from the edge answer to the escalation's end; 0 when none escalated
    degraded_reason: DegradedReason | None  # why the escalated images were answered at the edge
    bytes_per_escalation: int  # bytes sent to the cloud per escalated image (0: no call made)

    def __len__(self) -> int:
        return len(self.probabilities)

    @property
    def escalations(self) -> int:
        return int(self.escalated.sum())

    @property
    def degraded(self) -> int:
        """How many images came back degraded."""
        return self.escalations if self.degraded_reason else 0

    @property
    def tiers(self) -> list[str]:
        cloud = self.escalated if self.degraded_reason is None else np.zeros(len(self), bool)
        return [str(tier) for tier in np.where(cloud, "cloud", "edge")]

    def __getitem__(self, i: int) -> Answer:
        escalated = bool(self.escalated[i])
        return Answer(
            self.pair,
            self.probabilities[i],
            "cloud" if escalated and self.degraded_reason is None else "edge",
            float(self.edge_confidence[i]),
            int(self.edge_class_id[i]),
            self.edge_ms,
            self.cloud_ms if escalated else 0.0,
            self.degraded_reason if escalated else None,
            self.bytes_per_escalation if escalated else 0,
        )


class Cascade:
    """Answers at the edge when the policy trusts the edge model, else asks the cloud.

    A cloud failure never fails the request: the edge answer comes back degraded. The cloud is
    called only when its expected latency fits the time left (or the call is the latency
    tracker's probe of a cloud that was too slow) and the breaker lets it through,
    and never when the cloud does not hold the version the manifest pairs with the edge model
    (`mismatch` says why; escalations then come back degraded with VERSION_MISMATCH).
    `edge_folds`: the edge model crops and resizes itself; it gets colour-converted frames, one
    inference per frame shape in the batch.
    `budget` caps what is sent to the cloud (escalations and audits; over it, BUDGET);
    `auditor` sends a sample of confident answers to the cloud in the background; `sink` gets
    every input the cloud answered, escalated or audited."""

    def __init__(
        self,
        manifest: Manifest,
        edge_infer: EdgeInfer,
        policy: ScorePolicy,
        cloud: CloudClient | None,
        cloud_timeout_s: float = 1.0,
        latency: LatencyTracker | None = None,
        breaker: CircuitBreaker | None = None,
        edge_folds: bool = False,
        budget: EscalationBudget | None = None,
        auditor: Auditor | None = None,
        sink: ExampleSink | None = None,
    ):
        self.manifest = manifest
        self.policy = policy
        self.latency = latency or LatencyTracker()
        self.breaker = breaker or CircuitBreaker()
        self._edge_infer = edge_infer
        self._edge_folds = edge_folds
        self._cloud = cloud
        self._cloud_timeout_s = cloud_timeout_s
        self.budget = budget
        self.auditor = auditor
        self._sink = sink
        self.mismatch: str | None = None

    async def classify(
        self, image: NDArray[Any], *, received_at: float, deadline: float | None = None
    ) -> Answer:
        """`image` is decoded (uint8 [H, W] or [H, W, C]); times are time.perf_counter()."""
        answers = await self.classify_batch([image], received_at=received_at, deadline=deadline)
        return answers[0]

    async def classify_batch(
        self,
        images: Images,
        *,
        received_at: float,
        deadline: float | None = None,
        after_edge: Callable[[], None] | None = None,
    ) -> Answers:
        """`images` are decoded (uint8 [H, W] or [H, W, C] each, or one [N, H, W, C] array): one
        edge inference for them all, one cloud call for those the policy escalates.
        `after_edge` is called once the edge's answers are in, before any cloud call."""
        with tracing.span("edge_inference", images=len(images)):
            logits, mirrored = await self._edge_logits(images)
        with tracing.span("policy", policy=self.policy.label) as span:
            probabilities, confidence = self.policy.answer(self.policy.views(logits, mirrored))
            edge_class_id = probabilities.argmax(axis=-1)
            edge_done = time.perf_counter()
            escalated = np.asarray(self.policy.escalate(confidence))
            span.set_attribute("escalated", int(escalated.sum()))
        if after_edge is not None:
            after_edge()
        if self.auditor is not None:
            self._audit(images, probabilities, self.auditor.sample(~escalated))
        reason, sent, cloud_ms = None, 0, 0.0
        if escalated.any():
            chosen = [images[i] for i in np.flatnonzero(escalated)]
            with tracing.span("cloud_call", images=len(chosen)) as span:
                reason, sent, cloud_probabilities = await self._ask_cloud(chosen, deadline)
                if reason is not None:
                    span.set_attribute("degraded_reason", str(reason))
            if cloud_probabilities is not None:
                if self._sink is not None:
                    edge, cloud = probabilities[escalated], cloud_probabilities
                    self._sink.collect("escalated", self.manifest, chosen, edge, cloud)
                probabilities[escalated] = cloud_probabilities
            cloud_ms = (time.perf_counter() - edge_done) * 1e3
        return Answers(
            self.manifest,
            probabilities,
            confidence,
            edge_class_id,
            escalated,
            edge_ms=(edge_done - received_at) * 1e3,
            cloud_ms=cloud_ms,
            degraded_reason=reason,
            bytes_per_escalation=sent,
        )

    async def _edge_logits(self, images: Images) -> tuple[NDArray[Any], NDArray[Any] | None]:
        """Edge logits [N, members, K] of the images and, for a mirroring policy, of their
        mirrors: one inference of the N (or 2N) views."""
        n = len(images)
        logits = await self._infer(with_mirrors(images) if self.policy.mirror else images)
        logits = member_logits(logits)
        return logits[:n], logits[n:] if self.policy.mirror else None

    async def _infer(self, images: Images) -> NDArray[Any]:
        spec = self.manifest.edge.preprocessing
        if not self._edge_folds:
            batch = await off_loop(images, prepare_batch, images, spec)
            return np.asarray(await self._edge_infer(batch), np.float64)
        groups = await off_loop(images, color_groups, images, spec)
        parts = await asyncio.gather(*(self._edge_infer(batch) for _, batch in groups))
        logits = np.empty((len(images), *parts[0].shape[1:]))
        for (rows, _), part in zip(groups, parts):
            logits[rows] = part
        return logits

    async def _ask_cloud(
        self, images: list[Image], deadline: float | None
    ) -> tuple[DegradedReason | None, int, NDArray[Any] | None]:
        """One cloud call for `images`: (None, bytes sent per image, probabilities [n, K]), or
        (the degraded reason, bytes sent per image, None) when the cloud is not or cannot be
        asked."""
        timeout = self._cloud_timeout_s
        if deadline is not None:
            timeout = min(timeout, deadline - time.perf_counter() - ANSWER_RESERVE_S)
        if self._cloud is None or self.breaker.state == "open":
            return DegradedReason.CLOUD_UNAVAILABLE, 0, None
        if self.mismatch:
            return DegradedReason.VERSION_MISMATCH, 0, None
        expected = self.latency.expected_s()
        expected_to_fit = expected is not None and expected <= timeout
        if timeout < MIN_CLOUD_BUDGET_S or not self.latency.admit(timeout):
            return DegradedReason.DEADLINE, 0, None
        if self.budget is not None and not self.budget.take(len(images)):
            return DegradedReason.BUDGET, 0, None
        if not self.breaker.allow():
            return DegradedReason.CLOUD_UNAVAILABLE, 0, None
        batch = await off_loop(images, prepare_batch, images, self.manifest.cloud.preprocessing)
        per_image = batch[0].nbytes
        sent = time.perf_counter()
        try:
            logits = await self._cloud.infer_batch(batch, timeout)
        except CloudError as e:
            self._cloud_failed(e.reason, timeout, time.perf_counter() - sent, expected_to_fit)
            return e.reason, per_image, None
        self.latency.record(time.perf_counter() - sent)
        self.breaker.success()
        return None, per_image, softmax(np.asarray(logits, np.float64))

    def _audit(self, images: Images, probabilities: NDArray[Any], picked: NDArray[Any]) -> None:
        """Start the audit of the `picked` answers in the background, if the cloud is usable,
        the auditor has room and the budget allows; else they are skipped."""
        auditor, n = self.auditor, int(picked.sum())
        if auditor is None or n == 0:
            return
        usable = self._cloud is not None and not self.mismatch and self.breaker.state == "closed"
        if not (usable and auditor.has_room and (self.budget is None or self.budget.take(n))):
            auditor.skipped += n
            return
        chosen = [images[i] for i in np.flatnonzero(picked)]
        auditor.start(self._ask_audit(auditor, chosen, probabilities[picked]))

    async def _ask_audit(
        self, auditor: Auditor, images: list[Image], edge_probabilities: NDArray[Any]
    ) -> None:
        """One audit call: the cloud's answers, compared with the edge's top-1."""
        assert self._cloud is not None
        try:
            with tracing.span("audit_call", images=len(images)):
                batch = await off_loop(
                    images, prepare_batch, images, self.manifest.cloud.preprocessing
                )
                auditor.bytes_sent += batch.nbytes
                logits = await self._cloud.infer_batch(batch, self._cloud_timeout_s)
        except CloudError as e:
            auditor.failed += len(images)
            log.debug("audit of %d answers not done: %s", len(images), e)
            return
        cloud = softmax(np.asarray(logits, np.float64))
        agreed = cloud.argmax(axis=-1) == edge_probabilities.argmax(axis=-1)
        auditor.tracker.record(self.manifest.family, self.manifest.edge.key, agreed)
        if self._sink is not None:
            self._sink.collect("audit", self.manifest, images, edge_probabilities, cloud)

    def _cloud_failed(
        self, reason: DegradedReason, timeout_s: float, elapsed_s: float, expected_to_fit: bool
    ) -> None:
        """A timeout is a latency sample too (until the cloud answers again). It counts towards
        the breaker when the call had the full cloud timeout or a budget the cloud's recent
        latency fitted; one cut short by a budget the cloud was not known to fit (no history, or
        a probe of a cloud already too slow) says nothing new about the cloud's health."""
        if reason is DegradedReason.VERSION_MISMATCH:  # the cloud is up without our version
            self.mismatch = "the cloud does not serve the paired version"
            return
        if reason is DegradedReason.CLOUD_TIMEOUT:
            self.latency.timed_out(elapsed_s)
            if timeout_s < self._cloud_timeout_s and not expected_to_fit:
                return
        self.breaker.failure()
