"""A family's escalation budget: a token bucket for the rate per second (with a burst) and a
ceiling per UTC day; an escalation or an audit over it is not sent (degraded reason `budget`)."""

from __future__ import annotations

import time
from collections.abc import Callable

DAY_S = 86400


class EscalationBudget:
    """At most `per_second` escalations a second on average (bursts of `burst`, default
    max(1, per_second)) and `per_day` per UTC day; None: no ceiling of that kind."""

    def __init__(
        self,
        per_second: float | None = None,
        per_day: int | None = None,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.per_second = per_second
        self.per_day = per_day
        self.burst = burst if burst is not None else max(1.0, per_second or 0.0)
        self._clock, self._wall = clock, wall
        self._tokens, self._filled_at = self.burst, clock()
        self._day, self.spent_today = int(wall() // DAY_S), 0

    def take(self, n: int = 1) -> bool:
        """Spend `n` escalations at once if all of them fit, else none (False)."""
        day = int(self._wall() // DAY_S)
        if day != self._day:
            self._day, self.spent_today = day, 0
        if self.per_day is not None and self.spent_today + n > self.per_day:
            return False
        if self.per_second is not None:
            now = self._clock()
            elapsed, self._filled_at = now - self._filled_at, now
            self._tokens = min(self.burst, self._tokens + elapsed * self.per_second)
            if self._tokens < n:
                return False
            self._tokens -= n
        self.spent_today += n
        return True
