"""Recent cloud latency: an EWMA and a p95 over a window of fresh samples."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import numpy as np


class LatencyTracker:
    """What the next cloud call is expected to take, from the calls before it.

    Samples older than `max_age_s` are forgotten, so a cloud that was slow once is tried
    again later instead of being skipped for good."""

    def __init__(
        self,
        window: int = 200,
        alpha: float = 0.2,
        max_age_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._samples: deque[tuple[float, float]] = deque(maxlen=window)
        self._alpha = alpha
        self._max_age_s = max_age_s
        self._clock = clock
        self._ewma: float | None = None

    def record(self, seconds: float) -> None:
        """One call's round trip (or, for a call that timed out, the time it was given)."""
        self._expire()
        self._samples.append((self._clock(), seconds))
        a = self._alpha
        self._ewma = seconds if self._ewma is None else a * seconds + (1 - a) * self._ewma

    def _expire(self) -> None:
        oldest = self._clock() - self._max_age_s
        while self._samples and self._samples[0][0] < oldest:
            self._samples.popleft()
        if not self._samples:
            self._ewma = None  # a fresh start, not a mean dragged by forgotten calls

    def _fresh(self) -> list[float]:
        self._expire()
        return [s for _, s in self._samples]

    @property
    def ewma_s(self) -> float | None:
        """Exponentially weighted mean of the fresh samples; None when there are none."""
        return self._ewma if self._fresh() else None

    @property
    def p95_s(self) -> float | None:
        """95th percentile of the fresh samples; None when there are none."""
        fresh = self._fresh()
        return float(np.percentile(fresh, 95)) if fresh else None

    def expected_s(self) -> float | None:
        """The larger of EWMA (quick to follow a slowdown) and p95 (the tail); None: unknown."""
        p95 = self.p95_s
        return None if p95 is None else max(p95, self._ewma or 0.0)

    def fits(self, budget_s: float) -> bool:
        """Whether a call is expected to finish within `budget_s` (unknown latency fits)."""
        expected = self.expected_s()
        return expected is None or expected <= budget_s
