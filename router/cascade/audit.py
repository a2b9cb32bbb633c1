"""Audit of confident edge answers: a sample of them also goes to the cloud in the background
(never on the request path), and their agreement with the cloud estimates the edge model's field
accuracy without labels, per family and edge model version, with a Wilson confidence interval."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

log = logging.getLogger(__name__)
Z_95 = 1.959964


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion; (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lower = 0.0 if successes == 0 else max(0.0, centre - half)  # exact at the ends, where
    upper = 1.0 if successes == n else min(1.0, centre + half)  # rounding would miss them
    return lower, upper


@dataclass
class Agreement:
    """Audited answers of one family and edge model version, and how many the cloud shared."""

    family: str
    edge_version: str
    audited: int = 0
    agreed: int = 0

    @property
    def rate(self) -> float:
        return self.agreed / self.audited if self.audited else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.agreed, self.audited)


class AgreementTracker:
    """Agreement per (family, edge version). An entry is below the bound when its interval's
    upper end is (the agreement is lower with 95% confidence): logged once as a warning each
    time it goes below."""

    def __init__(self, min_agreement: float = 0.0) -> None:
        self.min_agreement = min_agreement
        self.entries: dict[tuple[str, str], Agreement] = {}
        self._warned: set[tuple[str, str]] = set()

    def record(self, family: str, edge_version: str, agreed: NDArray[np.bool_]) -> Agreement:
        key = (family, edge_version)
        entry = self.entries.setdefault(key, Agreement(family, edge_version))
        entry.audited += len(agreed)
        entry.agreed += int(agreed.sum())
        if not self.below(entry):
            self._warned.discard(key)
        elif key not in self._warned:
            self._warned.add(key)
            lower, upper = entry.interval
            log.warning(
                "audit: %s %s agrees with the cloud on %.1f%% of %d audited answers "
                "(95%% interval %.1f-%.1f%%), below the bound %.1f%%",
                family,
                edge_version,
                100 * entry.rate,
                entry.audited,
                100 * lower,
                100 * upper,
                100 * self.min_agreement,
            )
        return entry

    def below(self, entry: Agreement) -> bool:
        return entry.audited > 0 and entry.interval[1] < self.min_agreement


class Auditor:
    """Picks a `rate` share of confident answers and runs their audits as background tasks, at
    most `max_pending` at once (more are skipped: audits never queue up behind a slow cloud)."""

    def __init__(
        self,
        rate: float,
        tracker: AgreementTracker | None = None,
        max_pending: int = 4,
        seed: int | None = None,
    ) -> None:
        self.rate = rate
        self.tracker = tracker or AgreementTracker()
        self.max_pending = max_pending
        self.skipped = 0  # sampled but not audited: too many pending, or over the budget
        self.failed = 0  # the cloud did not answer an audit
        self.bytes_sent = 0  # request payload bytes of the audits sent to the cloud
        self._rng = np.random.default_rng(seed)
        self._pending: set[asyncio.Task[None]] = set()

    def sample(self, confident: NDArray[np.bool_]) -> NDArray[np.bool_]:
        """Which of the answers to audit: each confident one with probability `rate`."""
        picked: NDArray[np.bool_] = confident & (self._rng.random(len(confident)) < self.rate)
        return picked

    @property
    def has_room(self) -> bool:
        return len(self._pending) < self.max_pending

    def start(self, audit: Coroutine[Any, Any, None]) -> None:
        """Run `audit` in the background (callers check `has_room` first)."""
        task = asyncio.get_running_loop().create_task(audit)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for the audits running now."""
        await asyncio.gather(*self._pending, return_exceptions=True)
