"""A circuit breaker for the cloud: stop calling after repeated failures, probe, recover."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

log = logging.getLogger(__name__)
State = Literal["closed", "open", "half-open"]


class CircuitBreaker:
    """closed: calls go through; `failures` failures in a row open it.
    open: no calls for `cooldown_s`, then half-open.
    half-open: one probe goes through; its success closes the breaker, its failure reopens it.
    A probe that has not reported back (slow, or cancelled) is joined by another after another
    `cooldown_s`. The default cooldown is short (0.5 s) so that a cloud that recovers is in use
    again within a second; a probe is one request."""

    def __init__(
        self,
        failures: int = 5,
        cooldown_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ):
        if failures < 1 or cooldown_s < 0:
            raise ValueError("failures must be >= 1 and cooldown_s >= 0")
        self.failures = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._consecutive = 0
        self._opened_at: float | None = None
        self._probe_at: float | None = None

    @property
    def state(self) -> State:
        if self._opened_at is None:
            return "closed"
        if self._probe_at is None and self._clock() < self._opened_at + self.cooldown_s:
            return "open"
        return "half-open"

    def allow(self) -> bool:
        """Whether to make a call now; in half-open, True once per probe."""
        state = self.state
        if state == "closed":
            return True
        if state == "open":
            return False
        now = self._clock()
        if self._probe_at is not None and now < self._probe_at + self.cooldown_s:
            return False  # a probe is in flight
        self._probe_at = now
        return True

    def success(self) -> None:
        if self._opened_at is not None:
            log.warning("cloud circuit breaker closed: a probe succeeded")
        self._consecutive = 0
        self._opened_at = self._probe_at = None

    def failure(self) -> None:
        """A failed call; a failed probe reopens the breaker from when the probe was sent, so
        probes go every `cooldown_s` however long each took to fail."""
        self._consecutive += 1
        if self._opened_at is not None or self._consecutive >= self.failures:
            if self._opened_at is None:
                log.warning("cloud circuit breaker open: %d failures in a row", self._consecutive)
            self._opened_at = self._clock() if self._probe_at is None else self._probe_at
            self._probe_at = None
