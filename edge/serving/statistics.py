"""Triton's inference statistics for the agent's one model, per version: what KServe v2's
ModelStatistics answers (perf_analyzer reads it) and what the nv_inference_* metrics expose.

A request's stages, as Triton names them: queue (arrival to admission, a stream frame waiting
for room), compute_input (decoding and checking its images), compute_infer (the cascade: edge
model, policy, cloud call), compute_output (building the response). Requests batched together
(edge.serving.batching) are one execution of the cascade, counted with its batch size.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tritonclient.grpc import service_pb2 as kpb

# Triton's failure reasons (nv_inference_request_failure{reason}).
FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")
STAGES = ("queue", "compute_input", "compute_infer", "compute_output")


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns

    def message(self) -> kpb.StatisticDuration:
        return kpb.StatisticDuration(count=self.count, ns=self.ns)


@dataclass(frozen=True)
class Stamps:
    """time.perf_counter_ns() at each stage's end of one answered request."""

    received: int
    admitted: int
    decoded: int
    inferred: int
    responded: int
    queued: int = 0  # of decoded..inferred, the time in the dynamic batcher's queue

    def stages(self) -> dict[str, int]:
        """Nanoseconds in each of STAGES (the batcher's queue counts as queue)."""
        ends = (self.admitted, self.decoded, self.inferred, self.responded)
        starts = (self.received, *ends[:-1])
        stages = {stage: end - start for stage, start, end in zip(STAGES, starts, ends)}
        stages["queue"] += self.queued
        stages["compute_infer"] -= self.queued
        return stages


@dataclass
class VersionStatistics:
    """One version's counts and cumulative durations, Triton's fields."""

    last_inference_ms: int = 0
    inference_count: int = 0
    execution_count: int = 0
    pending: int = 0  # requests admitted and not answered yet
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    stages: dict[str, Duration] = field(default_factory=lambda: {s: Duration() for s in STAGES})
    failures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAILURE_REASONS, 0))
    batches: dict[int, dict[str, Duration]] = field(default_factory=dict)  # by batch size

    def message(self, name: str, version: str) -> kpb.ModelStatistics:
        stages = {stage: d.message() for stage, d in self.stages.items()}
        return kpb.ModelStatistics(
            name=name,
            version=version,
            last_inference=self.last_inference_ms,
            inference_count=self.inference_count,
            execution_count=self.execution_count,
            inference_stats=kpb.InferStatistics(
                success=self.success.message(),
                fail=self.fail.message(),
                cache_hit=kpb.StatisticDuration(),  # no response cache: 0, as Triton says
                cache_miss=kpb.StatisticDuration(),
                **stages,
            ),
            batch_stats=[
                kpb.InferBatchStatistics(
                    batch_size=size,
                    **{stage: d.message() for stage, d in durations.items() if stage != "queue"},
                )
                for size, durations in sorted(self.batches.items())
            ],
        )


class Statistics:
    """The statistics of model `name`, by version (a string, as KServe has it)."""

    def __init__(self, name: str, version: str) -> None:
        self.name = name
        self.versions: dict[str, VersionStatistics] = {}
        self.serving(version)

    def serving(self, version: str) -> VersionStatistics:
        """`version` loaded: its statistics, created at 0 (kept when it served before)."""
        return self.versions.setdefault(version, VersionStatistics())

    @contextmanager
    def pending(self, version: str) -> Iterator[None]:
        """A request of `version` in flight while inside."""
        stats = self.serving(version)
        stats.pending += 1
        try:
            yield
        finally:
            stats.pending -= 1

    def succeeded(
        self, version: str, images: int, stamps: Stamps, executed: int | None = None
    ) -> None:
        """A request of `images` answered; `executed`: the images of the cascade execution it
        counts (0: another request of its batch counts it; None: an execution of its own)."""
        executed = images if executed is None else executed
        stats = self.serving(version)
        stats.last_inference_ms = time.time_ns() // 1_000_000
        stats.inference_count += images
        stats.success.add(stamps.responded - stamps.received)
        stages = stamps.stages()
        for stage, ns in stages.items():
            stats.stages[stage].add(ns)
        if executed:
            stats.execution_count += 1
            by_batch = stats.batches.setdefault(executed, {s: Duration() for s in STAGES})
            for stage, ns in stages.items():
                by_batch[stage].add(ns)

    def failed(self, version: str, reason: str, ns: int) -> None:
        """A request refused or failed for one of FAILURE_REASONS after `ns` nanoseconds."""
        stats = self.serving(version)
        stats.failures[reason] += 1
        stats.fail.add(ns)

    def response(self, version: str = "") -> kpb.ModelStatisticsResponse:
        """KServe's ModelStatisticsResponse: `version`'s, or every version's when ""."""
        versions = [version] if version else sorted(self.versions, key=int)
        return kpb.ModelStatisticsResponse(
            model_stats=[self.versions[v].message(self.name, v) for v in versions]
        )
