"""Reading a source on a thread: a small bounded buffer between the reader and the consumer;
live sources drop their oldest frames when the consumer falls behind, and every source
reconnects with exponential back-off when it disappears."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    stop_never,
    stop_when_event_set,
    wait_exponential,
)

from edgecascade.edge.sources.base import Reading, Source, SourceFrame, SourceUnavailable

log = logging.getLogger(__name__)


class FrameBuffer:
    """A small bounded buffer between the reader thread and the consumer. When full, `put`
    drops the oldest frame (and counts it) if `drop_oldest`, else waits for room."""

    def __init__(self, capacity: int, drop_oldest: bool):
        self.capacity = capacity
        self.drop_oldest = drop_oldest
        self.dropped = 0
        self._frames: deque[SourceFrame] = deque()
        self._changed = threading.Condition()
        self._closed = False
        self._error: BaseException | None = None

    def put(self, frame: SourceFrame) -> None:
        with self._changed:
            while not self.drop_oldest and len(self._frames) >= self.capacity and not self._closed:
                self._changed.wait()
            if len(self._frames) >= self.capacity:
                self._frames.popleft()
                self.dropped += 1
            self._frames.append(frame)
            self._changed.notify_all()

    def get(self) -> SourceFrame | None:
        """The oldest buffered frame; None once closed and empty. Re-raises a reader failure."""
        with self._changed:
            while not self._frames and not self._closed:
                self._changed.wait()
            if self._frames:
                frame = self._frames.popleft()
                self._changed.notify_all()
                return frame
            if self._error is not None:
                raise self._error
            return None

    def close(self, error: BaseException | None = None) -> None:
        with self._changed:
            self._closed, self._error = True, error
            self._changed.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


class FrameReader(threading.Thread):
    """Reads a source into a FrameBuffer, at most `max_fps` frames per second, reconnecting
    with exponential back-off; gives up after `reconnect_timeout_s` without success."""

    def __init__(
        self,
        source: Source,
        buffer: FrameBuffer,
        max_fps: float | None = None,
        reconnect_timeout_s: float | None = 30.0,
    ):
        super().__init__(name=f"frames:{source}", daemon=True)
        self.source = source
        self.buffer = buffer
        self.max_fps = max_fps
        self.reconnect_timeout_s = reconnect_timeout_s
        self.frames_read = 0
        self.reconnects = 0
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()
        self.buffer.close()

    def run(self) -> None:
        try:
            frames = self._connect()
            while not self._stopping.is_set():
                try:
                    self._pump(frames)
                    break
                except SourceUnavailable as e:
                    log.warning("%s; reconnecting", e)
                    self.reconnects += 1
                    frames = self._connect()
            self.buffer.close()
        except Exception as e:  # noqa: BLE001 - handed to the consumer by FrameBuffer.get
            self.buffer.close(None if self._stopping.is_set() else e)

    def _connect(self) -> Iterator[Reading]:
        """Open the source, retrying with back-off; the last SourceUnavailable once the
        reconnect timeout has passed."""
        retrying = Retrying(
            retry=retry_if_exception_type(SourceUnavailable),
            wait=wait_exponential(multiplier=0.05, max=5.0),
            stop=stop_when_event_set(self._stopping)
            | (
                stop_never
                if self.reconnect_timeout_s is None
                else stop_after_delay(self.reconnect_timeout_s)
            ),
            sleep=self._sleep,
            before_sleep=_log_retry,
            reraise=True,
        )
        try:
            return retrying(self.source.open)
        except SourceUnavailable as e:
            if self._stopping.is_set():
                raise
            raise SourceUnavailable(f"{e} (gave up after {self.reconnect_timeout_s:g} s)") from None

    def _sleep(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def _pump(self, frames: Iterator[Reading]) -> None:
        period = 1.0 / self.max_fps if self.max_fps else 0.0
        next_at = time.monotonic()
        for position, image in frames:
            if self._stopping.is_set():
                return
            if period:
                if (wait := next_at - time.monotonic()) > 0:
                    self._stopping.wait(wait)
                next_at = max(next_at + period, time.monotonic() - period)
            self.buffer.put(SourceFrame(self.frames_read, position, time.time(), image))
            self.frames_read += 1


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.info("%s; retrying in %.2f s", error, state.next_action.sleep if state.next_action else 0)
