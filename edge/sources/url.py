"""A network stream: `--source rtsp://...` or `http://...`, whatever OpenCV's backends read."""

from __future__ import annotations

from edgecascade.edge.sources.base import register
from edgecascade.edge.sources.capture import CaptureSource


@register("url", "a stream URL (rtsp://, http://, ...)", claims=lambda spec: "://" in spec, rank=20)
def url(spec: str) -> CaptureSource:
    return CaptureSource(spec, live=True)
