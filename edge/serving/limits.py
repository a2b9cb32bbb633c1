"""Admission control: a bound on requests in flight. A unary call past it is turned away at once;
a stream frame waits for room (its stream, which has at most stream_window frames in flight, is
back-pressured instead of refused)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from edgecascade.cloud.common.errors import Overloaded

__all__ = ["InFlightLimit", "Overloaded"]


class InFlightLimit:
    """Counts requests in flight (asyncio: one event loop, no lock needed) and refuses one
    more past `maximum` instead of queueing it, unless it waited for `room` first."""

    def __init__(self, maximum: int):
        self.maximum = maximum
        self.current = 0
        self._waiting: deque[asyncio.Future[None]] = deque()

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
            self._wake_one()

    async def room(self) -> None:
        """Wait until a slot is free, first come first served. `admit` right after, with no
        await between (one event loop), is then sure to get it."""
        while self.current >= self.maximum:
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                self._wake_one()  # the slot this waiter may have been woken for
                raise
            finally:
                if waiter in self._waiting:
                    self._waiting.remove(waiter)

    def _wake_one(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
