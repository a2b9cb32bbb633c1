"""Labelled, encoded test frames of a family, as a camera would send them."""

from __future__ import annotations

from dataclasses import dataclass

import cv2

from edgecascade.cloud.build import datasets


@dataclass(frozen=True)
class Frame:
    encoded: bytes  # PNG or JPEG
    label: int


def labelled_frames(family: str, limit: int | None = None) -> list[Frame]:
    """fashion: the Fashion-MNIST test split as PNG; imagenet: the 20 smoke photos (JPEG)."""
    if family == "fashion":
        test = datasets.fashion("test").head(limit)
        return [
            Frame(cv2.imencode(".png", image)[1].tobytes(), int(label))
            for image, label in zip(test.images, test.labels)
        ]
    if family == "imagenet":
        return [Frame(f.path.read_bytes(), f.label) for f in datasets.imagenet_smoke()[:limit]]
    raise ValueError(f"unknown family {family!r}: expected fashion or imagenet")
