"""A camera by its index: `--source 0`."""

from __future__ import annotations

from edgecascade.edge.sources.base import register
from edgecascade.edge.sources.capture import CaptureSource


@register("camera", "a camera index (0, 1, ...)", claims=str.isdigit, rank=10)
def camera(spec: str) -> CaptureSource:
    return CaptureSource(int(spec), live=True)
