"""A folder of images, read in name order: `--source` an existing folder."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import cv2

from edgecascade.edge.sources.base import Image, Reading, SourceUnavailable, register

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class FolderSource:
    """The images of a folder in name order; resumes after the last image read."""

    live = False

    def __init__(self, folder: Path):
        self.folder = folder
        self._last: str | None = None

    def __str__(self) -> str:
        return f"folder {self.folder}"

    def open(self) -> Iterator[Reading]:
        if not self.folder.is_dir():
            raise SourceUnavailable(f"{self} does not exist")
        names = sorted(p.name for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        return self._read([n for n in names if self._last is None or n > self._last])

    def _read(self, names: list[str]) -> Iterator[Reading]:
        for name in names:
            bgr: Image | None = cv2.imread(str(self.folder / name), cv2.IMREAD_COLOR)
            if bgr is None:
                if not self.folder.is_dir():
                    raise SourceUnavailable(f"{self} disappeared")
                log.warning("skipping unreadable image %s", self.folder / name)
            else:
                yield None, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            self._last = name


@register(
    "folder", "a folder of images, read in name order", claims=lambda s: Path(s).is_dir(), rank=30
)
def folder(spec: str) -> FolderSource:
    return FolderSource(Path(spec))
