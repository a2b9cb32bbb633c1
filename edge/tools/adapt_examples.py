"""`edgecascade models adapt`: one adaptation round on the examples edges collected (needs the
"build" extra). The examples are split by sha256 into training and held-out parts; the fashion
edge model is distilled on the training part and quantized to INT8 as the drift round does
(cloud/build/adapt_drift.py); the serving and the new INT8 models are judged on the original
calibration split (labels) and on the held-out examples (agreement with the cloud's argmax);
only when the gate passes is the new edge model published, signed, with the current cloud model
and a threshold calibrated for it as `models build` does: on the calibration split, against
the answers of the cloud model it is published with.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
from numpy.typing import NDArray

from edgecascade.cloud.build.adapt import Step
from edgecascade.cloud.build.adapt_drift import distilled_onnx, int8_edge
from edgecascade.cloud.build.adapt_recipe import Recipe
from edgecascade.cloud.build.builder import batched_logits
from edgecascade.cloud.build.datasets import fashion
from edgecascade.cloud.build.families import FAMILIES, WEIGHTS_DIR
from edgecascade.cloud.common.errors import UserError
from edgecascade.cloud.common.manifest import Manifest, sha256_file
from edgecascade.cloud.common.paths import edge_model_file
from edgecascade.cloud.common.preprocessing import mirrored
from edgecascade.cloud.registry.examples import open_received
from edgecascade.cloud.registry.signing_keys import save_build_manifest
from edgecascade.cloud.registry.store import MANIFEST, Registry
from edgecascade.router.policy.calibration import (
    DEFAULT_ASSURANCE,
    Split,
    Target,
    calibrate,
    threshold_note,
)
from edgecascade.router.policy.policies import ScorePolicy, policy_from_manifest

HELD_OUT_EVERY = 5  # an example is held out when its sha256, as a number, is a multiple of this
MAX_CLEAN_DROP = 0.003  # the gate: at most 0.3 pt lost on the original calibration split


@dataclass(frozen=True)
class Collected:
    """Examples read from the stores: images [N, H, W, C], the cloud's probabilities [N, K],
    whether each is held out, and the bytes they weigh."""

    images: NDArray[np.uint8]
    cloud: NDArray[np.float32]
    held_out: NDArray[np.bool_]
    nbytes: int


def collect(files: Iterable[Path], family: str) -> Collected:
    """The `family` examples of every store file, deduplicated by sha256 and split by it."""
    seen: dict[str, tuple[NDArray[np.uint8], NDArray[np.float32], int]] = {}
    for path in files:
        if not Path(path).is_file():
            raise UserError(f"no example store {path}")
        with open_received(Path(path)) as store:
            for example in store.examples(family):
                seen[example.sha256] = (
                    example.image,
                    example.cloud_probabilities,
                    example.nbytes,
                )
    if not seen:
        raise UserError(f"no {family} examples found (edges upload them as they escalate)")
    keys = sorted(seen)
    return Collected(
        images=np.stack([seen[k][0] for k in keys]),
        cloud=np.stack([seen[k][1] for k in keys]).astype(np.float32),
        held_out=np.array([int(k, 16) % HELD_OUT_EVERY == 0 for k in keys]),
        nbytes=sum(seen[k][2] for k in keys),
    )


def _split(model: ov.CompiledModel, images: NDArray[np.uint8], labels: NDArray[np.int64]) -> Split:
    """Edge logits of `images` (and their mirror images) judged against `labels`; the cloud
    is taken as right throughout (only the edge's figures are read; see `_cloud_correct`)."""
    return Split(
        batched_logits(model, images),
        labels,
        np.ones(len(labels), bool),
        batched_logits(model, mirrored(images)),
    )


def _cloud_correct(
    core: ov.Core,
    folder: Path,
    current: Manifest,
    images: NDArray[np.uint8],
    labels: NDArray[np.int64],
) -> NDArray[np.bool_]:
    """Which of `images` the family's cloud model (from its checkout `folder`) gets right."""
    (cloud_file,) = (folder / rel for rel in current.cloud.files if rel.endswith(".onnx"))
    right: NDArray[np.bool_] = (
        batched_logits(core.compile_model(cloud_file, "CPU"), images).argmax(-1) == labels
    )
    return right


def _accuracy(split: Split, policy: ScorePolicy) -> float:
    return float(split.edge_correct(policy).mean())


def adapt(
    registry: Registry,
    family: str,
    collected: Collected,
    recipe: Recipe,
    publish: bool,
    step: Step | None = None,
) -> dict[str, Any]:
    """Run one round against `family`'s current version in `registry`; the report."""
    if family != "fashion":
        raise UserError(f"models adapt distils the fashion edge model: family {family!r}")
    if registry.current_version(family) is None:
        raise UserError(f"{family} has no current version in {registry.root} (models publish)")
    current = registry.get(family)
    train, held = ~collected.held_out, collected.held_out
    if not train.any() or not held.any():
        raise UserError(f"{len(collected.images)} examples: too few to train on and hold some out")
    original = fashion("train")
    calibration = fashion("calibration")
    core = ov.Core()
    with tempfile.TemporaryDirectory() as tmp:
        folder = registry.checkout(current, Path(tmp) / "root" / family)
        policy = policy_from_manifest(current.policy)
        onnx_path = distilled_onnx(
            WEIGHTS_DIR / "fashion_edge.onnx",
            collected.images[train],
            collected.cloud[train],
            original.images[..., None],
            original.labels,
            recipe,
            Path(tmp),
            step,
        )
        fp32 = ov.convert_model(onnx_path)
        int8 = int8_edge(fp32)
        models = {
            "old": core.compile_model(edge_model_file(folder), "CPU"),
            "new": core.compile_model(int8, "CPU"),
        }
        cloud_answers = collected.cloud[held].argmax(-1).astype(np.int64)
        splits = {
            name: {
                "calibration": _split(model, calibration.images[..., None], calibration.labels),
                "held_out": _split(model, collected.images[held], cloud_answers),
            }
            for name, model in models.items()
        }
        figures = {
            name: {part: _accuracy(split, policy) for part, split in parts.items()}
            for name, parts in splits.items()
        }
        old, new = figures["old"], figures["new"]
        clean_ok = new["calibration"] >= old["calibration"] - MAX_CLEAN_DROP - 1e-12
        held_ok = new["held_out"] > old["held_out"]
        reasons = [
            f"calibration split {new['calibration']:.2%} vs {old['calibration']:.2%} "
            + ("(within 0.3 pt)" if clean_ok else "(lost more than 0.3 pt)"),
            f"held-out agreement {new['held_out']:.2%} vs {old['held_out']:.2%} "
            + ("(better)" if held_ok else "(not better)"),
        ]
        passed = clean_ok and held_ok
        published = None
        threshold: dict[str, Any] | None = None
        if passed and publish:
            ov.save_model(int8, edge_model_file(folder), compress_to_fp16=False)
            ov.save_model(fp32, edge_model_file(folder, "fp32"), compress_to_fp16=False)
            cloud_correct = _cloud_correct(
                core, folder, current, calibration.images[..., None], calibration.labels
            )
            result = calibrate(
                replace(splits["new"]["calibration"], cloud_correct=cloud_correct),
                Target.parse(FAMILIES[family].calibration_target),
                policy.name,
                DEFAULT_ASSURANCE,
                policy.mirror,
                policy.ensemble,
            )
            manifest = _adapted_manifest(current, folder, result.policy, new)
            manifest.notes["threshold"] = threshold_note(
                result,
                f"by models adapt on the calibration split ({len(calibration.labels)} images)",
            )
            save_build_manifest(manifest, folder / MANIFEST)
            publication = registry.publish(family, folder)
            published = publication.manifest.version if publication.created else None
            threshold = {
                "on": f"calibration split ({len(calibration.labels)} images, labels)",
                "policy": result.policy.label,
                "threshold": result.policy.threshold,
                "escalation_rate": result.point.escalation_rate,
            }
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "family": family,
        "serving_version": current.version,
        "examples": {
            "total": len(collected.images),
            "training": int(train.sum()),
            "held_out": int(held.sum()),
            "bytes": collected.nbytes,
            "calibration_split": len(calibration.labels),
        },
        "recipe": recipe.__dict__,
        "accuracy": figures,
        "gate": {"passed": passed, "reasons": reasons},
        "published_version": published,
        "threshold": threshold,
    }


def _adapted_manifest(
    current: Manifest, folder: Path, policy: ScorePolicy, figures: dict[str, float]
) -> Manifest:
    """`current` with the new edge model's file hashes, metrics and calibrated policy."""
    manifest = current.model_copy(deep=True)
    manifest.edge.files = {rel: sha256_file(folder / rel) for rel in current.edge.files}
    manifest.edge.metrics = {
        **current.edge.metrics,
        "adapt_calibration_accuracy": figures["calibration"],
        "adapt_held_out_agreement": figures["held_out"],
    }
    manifest.policy.kind = policy.name
    manifest.policy.threshold = policy.threshold
    manifest.policy.temperature = policy.temperature
    manifest.policy.mirror = policy.mirror
    manifest.policy.ensemble = policy.ensemble
    return manifest
