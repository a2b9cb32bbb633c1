"""Frame sources read with OpenCV: a camera index, a video file, an RTSP/HTTP stream or a
folder of images. A reader thread feeds a small bounded buffer; live sources drop their
oldest frames when the consumer falls behind, and every source reconnects with
exponential back-off when it disappears."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    stop_never,
    stop_when_event_set,
    wait_exponential,
)

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class SourceUnavailable(RuntimeError):
    """The source cannot be read right now (not there yet, gone, or the stream dropped)."""


@dataclass(frozen=True)
class SourceFrame:
    index: int  # 0-based over the whole run, reconnects included
    position_ms: float | None  # position inside a video file; None for live sources/folders
    captured_at: float  # unix time when the frame was read
    image: np.ndarray  # uint8 RGB [H, W, 3]


class CaptureSource:
    """A camera index, a video file or a stream URL, through cv2.VideoCapture. A file resumes
    where it was when it comes back; a live source (camera, stream) restarts at "now"."""

    def __init__(self, target: int | str):
        self.target = target
        self.live = isinstance(target, int) or "://" in target
        self._frames_read = 0

    def __str__(self) -> str:
        return f"camera {self.target}" if isinstance(self.target, int) else str(self.target)

    def open(self) -> Iterator[tuple[float | None, np.ndarray]]:
        capture = cv2.VideoCapture(self.target)
        if not capture.isOpened():
            capture.release()
            raise SourceUnavailable(f"cannot open {self}")
        if not self.live and self._frames_read:
            capture.set(cv2.CAP_PROP_POS_FRAMES, self._frames_read)
        return self._read(capture)

    def _read(self, capture: cv2.VideoCapture) -> Iterator[tuple[float | None, np.ndarray]]:
        try:
            while True:
                ok, bgr = capture.read()
                if not ok:
                    if self.live or not Path(self.target).exists():
                        raise SourceUnavailable(f"{self} stopped delivering frames")
                    return  # end of the video file
                self._frames_read += 1
                position = None if self.live else capture.get(cv2.CAP_PROP_POS_MSEC)
                yield position, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            capture.release()


class FolderSource:
    """The images of a folder in name order; resumes after the last image read."""

    live = False

    def __init__(self, folder: Path):
        self.folder = folder
        self._last: str | None = None

    def __str__(self) -> str:
        return f"folder {self.folder}"

    def open(self) -> Iterator[tuple[float | None, np.ndarray]]:
        if not self.folder.is_dir():
            raise SourceUnavailable(f"{self} does not exist")
        names = sorted(p.name for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        return self._read([n for n in names if self._last is None or n > self._last])

    def _read(self, names: list[str]) -> Iterator[tuple[float | None, np.ndarray]]:
        for name in names:
            bgr = cv2.imread(str(self.folder / name), cv2.IMREAD_COLOR)
            if bgr is None:
                if not self.folder.is_dir():
                    raise SourceUnavailable(f"{self} disappeared")
                log.warning("skipping unreadable image %s", self.folder / name)
            else:
                yield None, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            self._last = name


Source = CaptureSource | FolderSource


def open_source(spec: str) -> Source:
    """A camera index ("0"), a stream URL (rtsp://, http://...), a folder or a video file."""
    if spec.isdigit():
        return CaptureSource(int(spec))
    if "://" in spec:
        return CaptureSource(spec)
    path = Path(spec)
    return FolderSource(path) if path.is_dir() else CaptureSource(str(path))


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

    def _connect(self) -> Iterator[tuple[float | None, np.ndarray]]:
        """Open the source, retrying with back-off."""
        retrying = Retrying(
            retry=retry_if_exception_type(SourceUnavailable),
            wait=wait_exponential(multiplier=0.05, max=5.0),
            stop=stop_when_event_set(self._stopping)
            | (
                stop_never
                if self.reconnect_timeout_s is None
                else stop_after_delay(self.reconnect_timeout_s)
            ),
            sleep=self._stopping.wait,
            before_sleep=lambda state: log.info(
                "%s; retrying in %.2f s", state.outcome.exception(), state.next_action.sleep
            ),
            reraise=True,
        )
        return retrying(self.source.open)

    def _pump(self, frames: Iterator[tuple[float | None, np.ndarray]]) -> None:
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
