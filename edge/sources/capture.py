"""Sources read through cv2.VideoCapture: a camera, a video file, a stream URL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2

from edgecascade.edge.sources.base import Reading, SourceUnavailable


class CaptureSource:
    """A camera index, a video file or a stream URL. A file resumes where it was when it comes
    back; a live source (camera, stream) restarts at "now"."""

    def __init__(self, target: int | str, live: bool):
        self.target = target
        self.live = live
        self._frames_read = 0

    def __str__(self) -> str:
        return f"camera {self.target}" if isinstance(self.target, int) else self.target

    def open(self) -> Iterator[Reading]:
        capture = cv2.VideoCapture(self.target)
        if not capture.isOpened():
            capture.release()
            raise SourceUnavailable(f"cannot open {self}")
        if not self.live and self._frames_read:
            capture.set(cv2.CAP_PROP_POS_FRAMES, self._frames_read)
        return self._read(capture)

    def _read(self, capture: cv2.VideoCapture) -> Iterator[Reading]:
        try:
            while True:
                ok, bgr = capture.read()
                if not ok:
                    if self.live or not Path(str(self.target)).exists():
                        raise SourceUnavailable(f"{self} stopped delivering frames")
                    return  # end of the video file
                self._frames_read += 1
                position = None if self.live else capture.get(cv2.CAP_PROP_POS_MSEC)
                yield position, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            capture.release()
