"""Dynamic batching at the edge, as Triton's dynamic batcher: requests (unary calls, stream
frames, KServe requests, of any stream and either API) that arrive within a short window go
through the cascade together: one edge inference, and one cloud call for those escalated.

A batch leaves the queue when its images reach the largest batch allowed, when a prefix of the
queue makes a preferred batch size, or when its oldest request has waited the maximum queue
delay; at most `instances` batches run their edge stage at once (Triton's instance count), so
requests that arrive while they all run wait and leave together. A batch frees its instance once
its edge answers are in: its cloud call (for the escalated) goes on while the next batch runs at
the edge, so a slow or stalled cloud never holds up the edge answers of later requests. A batch
that fails is answered request by request, so one bad request gets its own error and the others
their answers. A request of LARGE_PIXELS or more runs alone: preparing its images takes tens to
hundreds of ms, which the requests batched with it would wait for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from edgecascade.cloud.common.preprocessing import LARGE_PIXELS, Images, pixel_count
from edgecascade.edge.serving.settings import EdgeSettings
from edgecascade.router.cascade.cascade import Answers, Cascade

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Batched:
    """One request's answers and how they were batched."""

    answers: Answers  # this request's rows of its batch
    queued_ns: int  # time in the batcher's queue
    batch: int  # images in the cascade execution that answered it
    leader: bool  # the first request of its batch: the one that counts the execution


@dataclass
class _Entry:
    images: Images
    received_at: float
    deadline: float | None
    future: asyncio.Future[Batched]
    enqueued_ns: int = field(default_factory=time.perf_counter_ns)
    due: bool = False  # has waited the maximum queue delay

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class BatchPolicy:
    """How requests are batched (EdgeSettings' dynamic batching fields)."""

    enabled: bool = True  # False: each request runs alone, as it comes
    max_batch: int = 32  # images in one batch (a request of more runs alone)
    max_queue_delay_us: int = 0
    preferred_sizes: tuple[int, ...] = ()
    instances: int = 2  # batches run at once

    @classmethod
    def of(cls, settings: EdgeSettings) -> BatchPolicy:
        return cls(
            settings.dynamic_batching,
            settings.max_batch,
            settings.max_queue_delay_us,
            tuple(settings.preferred_batch_sizes),
            settings.batch_instances,
        )


class Batcher:
    """Requests to one cascade, batched as `policy` says.
    The queue is looked at once per event-loop turn, so `max_queue_delay_us` 0 still joins the
    requests that arrive in one turn, or while every instance is busy."""

    def __init__(self, cascade: Cascade, policy: BatchPolicy) -> None:
        self.cascade = cascade
        self.policy = policy
        self.delay_s = policy.max_queue_delay_us / 1e6
        self.preferred = frozenset(s for s in policy.preferred_sizes if s <= policy.max_batch)
        self._queue: deque[_Entry] = deque()
        self._running = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timed: _Entry | None = None  # the request the timer is for
        self._soon = False  # a _schedule is due in this event-loop turn
        self._tasks: set[asyncio.Task[None]] = set()

    async def classify(
        self, images: Images, *, received_at: float, deadline: float | None
    ) -> Batched:
        """`images` (decoded) answered as part of a batch; raises what the cascade raises for
        them alone."""
        future: asyncio.Future[Batched] = asyncio.get_running_loop().create_future()
        entry = _Entry(images, received_at, deadline, future)
        if not self.policy.enabled or pixel_count(images) >= LARGE_PIXELS:  # alone, at once
            return Batched(await self._classify([entry], _nothing), 0, len(images), True)
        self._queue.append(entry)
        if not self._soon:  # once the requests arriving in this event-loop turn are queued
            self._soon = True
            asyncio.get_running_loop().call_soon(self._schedule)
        return await future

    def _schedule(self) -> None:
        """Start every batch that is due while an instance is free; else time the next one."""
        self._soon = False
        while self._queue and self._queue[0].future.cancelled():
            self._queue.popleft()
        while self._queue and self._running < self.policy.instances:
            size = self._ready_size()
            oldest = self._queue[0]
            waited_s = (time.perf_counter_ns() - oldest.enqueued_ns) / 1e9
            if size is None and not oldest.due and waited_s < self.delay_s:
                self._arm(oldest, self.delay_s - waited_s)
                return
            self._start(self._take(size or self.policy.max_batch))

    def _arm(self, oldest: _Entry, after_s: float) -> None:
        """`oldest` is due in `after_s`."""
        if self._timed is oldest:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timed = oldest
        self._timer = asyncio.get_running_loop().call_later(after_s, self._expired, oldest)

    def _expired(self, oldest: _Entry) -> None:
        self._timer = self._timed = None
        oldest.due = True
        self._schedule()

    def _ready_size(self) -> int | None:
        """The images of the batch to start now without waiting: max_batch when the queue holds
        that many, else the largest preferred size a prefix of the queue makes; None: wait."""
        total, best = 0, None
        for entry in self._queue:
            if entry.future.cancelled():
                continue
            total += len(entry)
            if total >= self.policy.max_batch:
                return self.policy.max_batch
            if total in self.preferred:
                best = total
        return best

    def _take(self, limit: int) -> list[_Entry]:
        """Requests from the front of the queue, up to `limit` images (the first always)."""
        taken: list[_Entry] = []
        size = 0
        while self._queue and (not taken or size + len(self._queue[0]) <= limit):
            entry = self._queue.popleft()
            if not entry.future.cancelled():
                taken.append(entry)
                size += len(entry)
        return taken

    def _start(self, entries: list[_Entry]) -> None:
        if not entries:
            return
        self._running += 1
        released = False

        def release() -> None:
            """Free the batch's instance (once): at the end of its edge stage, or of its run."""
            nonlocal released
            if not released:
                released = True
                self._running -= 1
                self._schedule()

        task = asyncio.get_running_loop().create_task(self._run(entries, release))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: release())

    async def _run(self, entries: list[_Entry], release: Callable[[], None]) -> None:
        started = time.perf_counter_ns()
        try:
            answers = await self._classify(entries, release)
        except (Exception, asyncio.CancelledError) as e:
            if len(entries) == 1 or isinstance(e, asyncio.CancelledError):
                for entry in entries:
                    _settle(entry.future, error=e)
                return
            # one of them is to blame: each alone gets its own answers or error
            log.debug("a batch of %d requests failed (%s): answering each alone", len(entries), e)
            await asyncio.gather(*(self._run([entry], _nothing) for entry in entries))
            return
        start, first = 0, answers.edge_ms
        earliest = min(entry.received_at for entry in entries)
        for i, entry in enumerate(entries):
            rows = slice(start, start + len(entry))
            start = rows.stop
            edge_ms = first - (entry.received_at - earliest) * 1e3
            batched = Batched(
                rows_of(answers, rows, edge_ms), started - entry.enqueued_ns, len(answers), i == 0
            )
            _settle(entry.future, batched)

    async def _classify(self, entries: list[_Entry], after_edge: Callable[[], None]) -> Answers:
        deadlines = [entry.deadline for entry in entries if entry.deadline is not None]
        return await self.cascade.classify_batch(
            _joined([entry.images for entry in entries]),
            received_at=min(entry.received_at for entry in entries),
            deadline=min(deadlines) if deadlines else None,
            after_edge=after_edge,
        )


def _nothing() -> None:
    """A request that runs alone holds no instance to free."""


def _settle(
    future: asyncio.Future[Batched],
    result: Batched | None = None,
    error: BaseException | None = None,
) -> None:
    if future.done():
        return
    if isinstance(error, asyncio.CancelledError):
        future.cancel()
    elif error is not None:
        future.set_exception(error)
    elif result is not None:
        future.set_result(result)


def _joined(parts: list[Images]) -> Images:
    """The requests' images as one batch: one array when they all are [N, H, W, C] arrays of
    one shape (KServe tensors), else the list of their images."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    if all(isinstance(p, np.ndarray) and p.shape[1:] == first[0].shape for p in parts):
        joined: NDArray[np.uint8] = np.concatenate(parts)
        return joined
    return [image for part in parts for image in part]


def rows_of(answers: Answers, rows: slice, edge_ms: float) -> Answers:
    """The `rows` of a batch's answers, as if they had been a batch of their own."""
    escalated = answers.escalated[rows]
    any_escalated = bool(escalated.any())
    return Answers(
        answers.pair,
        answers.probabilities[rows],
        answers.edge_confidence[rows],
        answers.edge_class_id[rows],
        escalated,
        edge_ms=edge_ms,
        cloud_ms=answers.cloud_ms if any_escalated else 0.0,
        degraded_reason=answers.degraded_reason if any_escalated else None,
        bytes_per_escalation=answers.bytes_per_escalation if any_escalated else 0,
    )
