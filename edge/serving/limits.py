"""Admission control: a bound on requests in flight, past which callers are turned away at once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from edgecascade.cloud.common.errors import Overloaded

__all__ = ["InFlightLimit", "Overloaded"]


class InFlightLimit:
    """Counts requests in flight (asyncio: one event loop, no lock needed) and refuses one
    more past `maximum` instead of queueing it."""

    def __init__(self, maximum: int):
        self.maximum = maximum
        self.current = 0

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Hold one slot for the duration of the block; raise Overloaded when none is free."""
        if self.current >= self.maximum:
            raise Overloaded(
                f"edge agent busy: {self.maximum} requests already in flight (max_in_flight); "
                "retry with back-off or send to another agent"
            )
        self.current += 1
        try:
            yield
        finally:
            self.current -= 1
