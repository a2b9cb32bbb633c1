"""One adaptation round on a simulated drift, offline: a corruption the edge was not trained on
shifts Fashion-MNIST train images, the family's real cloud model (its ONNX, OpenVINO on CPU)
answers them as soft labels (no human label), the edge model is distilled on them and
quantized to INT8 as a build does, and both edge models and the cloud are run on the shifted
and the clean test split (never used for adaptation)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openvino as ov
from numpy.typing import NDArray

from edgecascade.cloud.build.adapt import Step, distil, load_edge_members
from edgecascade.cloud.build.adapt_recipe import Recipe
from edgecascade.cloud.build.builder import (
    CALIBRATION_IMAGES,
    F32,
    batched_logits,
    quantize_int8,
)
from edgecascade.cloud.build.corruptions import checked_severity, corrupt, corruption
from edgecascade.cloud.build.datasets import fashion
from edgecascade.cloud.build.families import WEIGHTS_DIR
from edgecascade.cloud.build.families.onnx_export import export_onnx
from edgecascade.cloud.common.errors import UserError
from edgecascade.cloud.common.examples import Example
from edgecascade.cloud.common.paths import edge_model_file
from edgecascade.cloud.common.preprocessing import mirrored
from edgecascade.cloud.common.probabilities import softmax

Logits = NDArray[np.float32]


@dataclass(frozen=True)
class Views:
    """Edge logits [N, members, K] of the images and of their mirror images."""

    plain: Logits
    mirror: Logits


@dataclass(frozen=True)
class DriftRound:
    """What one round used and what each model answers on the shifted and clean test split."""

    examples: int
    uplink_bytes: int  # the examples as a store keeps them (image and both probability vectors)
    train_seconds: float
    labels: NDArray[np.int64]  # test split labels (the same images, shifted or not)
    cloud: dict[str, Logits]  # "shifted" | "clean" -> cloud logits
    before: dict[str, Views]  # the serving INT8 edge model
    after: dict[str, Views]  # the adapted INT8 edge model


def _views(model: ov.CompiledModel, images: NDArray[np.uint8]) -> Views:
    return Views(batched_logits(model, images), batched_logits(model, mirrored(images)))


def distilled_onnx(
    edge_onnx: Path,
    images: NDArray[np.uint8],
    cloud_probabilities: Logits,
    original_images: NDArray[np.uint8],
    original_labels: NDArray[np.int64],
    recipe: Recipe,
    workdir: Path,
    step: Step | None = None,
) -> Path:
    """The fashion edge model `edge_onnx` distilled on `images` against the cloud's
    probabilities (mixed with the original images), exported to `workdir`/adapted.onnx."""
    model = load_edge_members(edge_onnx)
    distil(model, images, cloud_probabilities, original_images, original_labels, recipe, step)
    return export_onnx(model, workdir / "adapted.onnx", 28, 1)


def int8_edge(fp32: ov.Model) -> ov.Model:
    """`fp32` quantized to INT8 as a fashion build does (the calibration split's first
    CALIBRATION_IMAGES images)."""
    return quantize_int8(fp32, fashion("calibration").images[:CALIBRATION_IMAGES, ..., None])


def drift_round(
    family_folder: Path,
    kind: str,
    severity: int,
    examples: int,
    recipe: Recipe,
    workdir: Path,
    step: Step | None = None,
) -> DriftRound:
    """Adapt the fashion edge model of `family_folder` once on `examples` train images shifted
    by corruption `kind` at `severity`, and answer the shifted and clean test split."""
    checked_severity(severity)
    if corruption(kind).in_training:
        raise UserError(f"corruption {kind!r} is in the cloud's training: pick a held-out one")
    core = ov.Core()
    cloud = core.compile_model(family_folder / "cloud" / "model.onnx", "CPU", F32)
    serving = core.compile_model(edge_model_file(family_folder), "CPU")
    train = fashion("train")
    rng = np.random.default_rng(recipe.seed)
    chosen = rng.permutation(len(train))
    shifted = corrupt(train.images[chosen[:examples]], kind, severity, seed=recipe.seed)[..., None]
    soft = softmax(batched_logits(cloud, shifted)).astype(np.float32)
    original = chosen[examples:]
    uplink = sum(
        Example.of("fashion", "fashion_edge", "escalated", image, p, p).nbytes
        for image, p in zip(shifted, soft)
    )
    start = time.perf_counter()
    onnx_path = distilled_onnx(
        WEIGHTS_DIR / "fashion_edge.onnx",
        shifted,
        soft,
        train.images[original][..., None],
        train.labels[original],
        recipe,
        workdir,
        step,
    )
    train_seconds = time.perf_counter() - start
    adapted = core.compile_model(int8_edge(ov.convert_model(onnx_path)), "CPU")
    test = fashion("test")
    splits = {
        "shifted": corrupt(test.images, kind, severity, seed=recipe.seed + 1)[..., None],
        "clean": test.images[..., None],
    }
    return DriftRound(
        examples=examples,
        uplink_bytes=uplink,
        train_seconds=train_seconds,
        labels=test.labels,
        cloud={k: batched_logits(cloud, v) for k, v in splits.items()},
        before={k: _views(serving, v) for k, v in splits.items()},
        after={k: _views(adapted, v) for k, v in splits.items()},
    )
