"""Recent cloud latency: an EWMA and a p95 over a window of fresh samples, and the probes that
find out when a cloud that was too slow is fast again."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# While the cloud is expected not to fit, one call in this long is still let through: a stalled
# cloud that recovers is back in use within about this time.
PROBE_INTERVAL_S = 0.25


@dataclass(frozen=True)
class Sample:
    at: float
    seconds: float
    timed_out: bool  # the call was given `seconds` and did not finish: a lower bound


class LatencyTracker:
    """What the next cloud call is expected to take, from the calls before it.

    Samples older than `max_age_s` are forgotten. A call that timed out counts (as the time it
    was given) only until a later call succeeds: that success shows the cloud answers again, so
    a stall does not keep the cloud "slow" until the timeouts age out. While the cloud is
    expected to be too slow for a budget, `admit` still lets one call through every
    `probe_interval_s`, so a recovery is found without waiting for the window to empty."""

    def __init__(
        self,
        window: int = 200,
        alpha: float = 0.2,
        max_age_s: float = 30.0,
        probe_interval_s: float = PROBE_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._samples: deque[Sample] = deque(maxlen=window)
        self._alpha = alpha
        self._max_age_s = max_age_s
        self._probe_interval_s = probe_interval_s
        self._clock = clock
        self._admitted_at = -float("inf")

    def record(self, seconds: float) -> None:
        """A call's round trip: the cloud answered, so earlier timeouts no longer count."""
        kept = [s for s in self._samples if not s.timed_out]
        self._samples.clear()
        self._samples.extend(kept)
        self._samples.append(Sample(self._clock(), seconds, False))

    def timed_out(self, seconds: float) -> None:
        """A call that was given `seconds` and did not finish in them."""
        self._samples.append(Sample(self._clock(), seconds, True))

    def _fresh(self) -> list[Sample]:
        oldest = self._clock() - self._max_age_s
        while self._samples and self._samples[0].at < oldest:
            self._samples.popleft()
        return list(self._samples)

    @property
    def stalled(self) -> bool:
        """Whether the latest call timed out: the cloud has not answered since."""
        fresh = self._fresh()
        return bool(fresh) and fresh[-1].timed_out

    @property
    def ewma_s(self) -> float | None:
        """Exponentially weighted mean of the fresh samples; None when there are none."""
        fresh = self._fresh()
        if not fresh:
            return None
        ewma = fresh[0].seconds
        for sample in fresh[1:]:
            ewma = self._alpha * sample.seconds + (1 - self._alpha) * ewma
        return ewma

    @property
    def p95_s(self) -> float | None:
        """95th percentile of the fresh samples; None when there are none."""
        fresh = self._fresh()
        return float(np.percentile([s.seconds for s in fresh], 95)) if fresh else None

    def expected_s(self) -> float | None:
        """The larger of EWMA (quick to follow a slowdown) and p95 (the tail); None: unknown."""
        p95 = self.p95_s
        return None if p95 is None else max(p95, self.ewma_s or 0.0)

    def fits(self, budget_s: float) -> bool:
        """Whether a call is expected to finish within `budget_s` (unknown latency fits)."""
        expected = self.expected_s()
        return expected is None or expected <= budget_s

    def admit(self, budget_s: float) -> bool:
        """Whether to make a call with `budget_s`: it is expected to fit, or it is a probe, no
        call having been let through for `probe_interval_s`."""
        now = self._clock()
        if not self.fits(budget_s) and now < self._admitted_at + self._probe_interval_s:
            return False
        self._admitted_at = now
        return True
