"""`edgecascade bench preprocessing`: centre crop and resize in cv2 before the edge model vs
folded into it (OpenVINO PrePostProcessor), interleaved frame by frame in one run, on the
family's real photos at their own sizes and resized to camera frames (640x480)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edgecascade.cloud.common.manifest import Manifest, Preprocessing
from edgecascade.cloud.common.paths import edge_model_file, family_dir, manifest_path
from edgecascade.cloud.common.preprocessing import (
    Image,
    color_groups,
    decode_image,
    from_cv2,
    prepare,
)
from edgecascade.edge.serving.runtime import EdgeModel
from edgecascade.edge.tools.demo import percentiles
from edgecascade.edge.tools.samples import labelled_frames

CAMERA = (640, 480)  # width, height


async def _fold(model: EdgeModel, frame: Image, spec: Preprocessing) -> NDArray[np.float32]:
    [(_, batch)] = color_groups([frame], spec)
    logits: NDArray[np.float32] = (await model.infer_batch(batch))[0]
    return logits


async def _cv2(model: EdgeModel, frame: Image, spec: Preprocessing) -> NDArray[np.float32]:
    return await model.infer(prepare(frame, spec))


async def measure(model: EdgeModel, frames: list[Image], rounds: int) -> dict[str, Any]:
    """Per-frame milliseconds (colour conversion and geometry included) and top-1 of both
    paths; each frame goes both ways back to back, in alternating order."""
    spec = model.fold
    assert spec is not None, "the model must fold to compare"
    compile_ms: list[float] = []
    for shape in dict.fromkeys(f.shape for f in frames):
        start = time.perf_counter()
        if not await model.fold_ready(shape):
            raise RuntimeError(f"no crop-and-resize variant for frames of {shape}")
        compile_ms.append((time.perf_counter() - start) * 1e3)
    paths = {"fold": _fold, "cv2": _cv2}
    ms: dict[str, list[float]] = {name: [] for name in paths}
    top1: dict[str, list[int]] = {name: [] for name in paths}
    for round_ in range(rounds + 1):  # round 0 warms up and gives the answers
        for i, frame in enumerate(frames):
            for name in list(paths)[:: 1 if (round_ + i) % 2 else -1]:
                start = time.perf_counter()
                logits = await paths[name](model, frame, spec)
                if round_:
                    ms[name].append((time.perf_counter() - start) * 1e3)
                else:
                    top1[name].append(int(np.argmax(logits)))
    p50 = {name: percentiles(values)["p50"] for name, values in ms.items()}
    return {
        "frames": len(frames),
        "shapes": [list(shape) for shape in sorted({f.shape for f in frames})],
        "p50_ms": p50,
        "fold_vs_cv2": round(p50["fold"] / p50["cv2"], 3),
        "top1_agree": sum(a == b for a, b in zip(top1["fold"], top1["cv2"])),
        "top1": top1,
        "compile_ms_p50": percentiles(compile_ms)["p50"],
    }


def run_bench(family: str, report_path: Path, rounds: int = 10) -> dict[str, Any]:
    """Both paths on the family's INT8 edge model (CPU, LATENCY hint); write the report."""
    if not manifest_path(family).exists():
        raise FileNotFoundError(
            f"family {family!r} is not built: run `edgecascade models build --family {family}`"
        )
    manifest = Manifest.load(manifest_path(family))
    frames = labelled_frames(family)
    photos = [decode_image(frame.encoded) for frame in frames]
    camera = [from_cv2(cv2.resize(photo, CAMERA, interpolation=cv2.INTER_AREA)) for photo in photos]
    model = EdgeModel(edge_model_file(family_dir(family), "int8"), fold=manifest.edge.preprocessing)

    async def both() -> dict[str, dict[str, Any]]:
        return {
            "photos": await measure(model, photos, rounds),
            "camera_640x480": await measure(model, camera, rounds),
        }

    results = asyncio.run(both())
    labels = [frame.label for frame in frames]
    for result in results.values():
        result["top1_correct"] = {
            name: sum(a == b for a, b in zip(answers, labels))
            for name, answers in result.pop("top1").items()
        }
    report: dict[str, Any] = {
        "family": family,
        "edge_model": manifest.edge.key,
        "device": model.describe(),
        "cpus": os.cpu_count(),
        "rounds": rounds,
        "preprocessing": manifest.edge.preprocessing.model_dump(),
        "results": results,
    }
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    return report
