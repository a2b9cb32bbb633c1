"""A video file: any other `--source`; a file not there yet is waited for."""

from __future__ import annotations

from pathlib import Path

from edgecascade.edge.sources.base import register
from edgecascade.edge.sources.capture import CaptureSource


@register("file", "a video file (what no other kind claims)", claims=lambda spec: True, rank=100)
def file(spec: str) -> CaptureSource:
    return CaptureSource(str(Path(spec)), live=False)
