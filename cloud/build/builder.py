"""Build a family's artifacts: edge FP32 + INT8 OpenVINO IR, cloud ONNX, labels, manifest.

Layout under family_dir(name):
    edge/fp32/model.xml|.bin   edge model, FP32 IR (reference)
    edge/model.xml|.bin        edge model, INT8 IR (post-training quantization with nncf)
    cloud/model.onnx           cloud model (served by Triton)
    labels.json  manifest.json
    calibration.npz                         edge and cloud logits of the calibration split
    test_predictions.npz                    (fashion only) the same of the test split
    baselines/edge_ensemble/model.xml|.bin  (fashion only: the 3-member ensemble of small CNNs,
                                             INT8, not served; the router compares the served
                                             wide CNN with it; its logits are in both .npz)

Metrics are measured for reporting only; nothing here is tuned on them.

    python -m edgecascade.cloud.build.builder fashion imagenet
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import nncf
import numpy as np
import openvino as ov
from numpy.typing import NDArray

from edgecascade.cloud.build.costs import LATENCY_ITERATIONS, interleaved_p50_ms, latency_request
from edgecascade.cloud.build.datasets import LabelledImages, fashion, imagenet_smoke
from edgecascade.cloud.build.families import FAMILIES, FASHION_BASELINE_EDGE, WEIGHTS_DIR, Family
from edgecascade.cloud.common.manifest import (
    Manifest,
    ModelSpec,
    Preprocessing,
    RoutingPolicy,
    labels_sha256,
    sha256_file,
)
from edgecascade.cloud.common.paths import baseline_model_file, edge_model_file, family_dir
from edgecascade.cloud.common.preprocessing import (
    Image,
    decode_image,
    from_cv2,
    mirrored,
    prepare,
)
from edgecascade.cloud.common.probabilities import softmax
from edgecascade.cloud.registry.signing_keys import save_build_manifest

Progress = Callable[[str], None]

CALIBRATION_IMAGES = 300
BATCH = 256
F32 = {"INFERENCE_PRECISION_HINT": "f32"}

# Paths relative to the family folder, where the edge agent looks for them.
EDGE_INT8 = edge_model_file(Path(), "int8").as_posix()
EDGE_FP32 = edge_model_file(Path(), "fp32").as_posix()
CLOUD_ONNX = "cloud/model.onnx"
# Not served: the fashion edge ensemble served before, the baseline of equal compute (router
# evaluate); its logits are stored under BASELINE_LOGITS (and BASELINE_LOGITS + "_mirrored").
BASELINE_INT8 = baseline_model_file(Path(), FASHION_BASELINE_EDGE).as_posix()
BASELINE_ONNX = WEIGHTS_DIR / f"fashion_{FASHION_BASELINE_EDGE}.onnx"
BASELINE_LOGITS = f"{FASHION_BASELINE_EDGE}_logits"


def build_family(
    name: str, root: Path | None = None, *, progress: Progress | None = None
) -> Manifest:
    """Build family `name` into family_dir(name, root) and return its manifest.

    The family is built in a sibling staging folder that replaces the old one when complete.
    """
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; known: {', '.join(FAMILIES)}")
    family = FAMILIES[name]
    say = progress or (lambda _message: None)
    out = family_dir(name, root)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{name}.building"
    shutil.rmtree(stage, ignore_errors=True)
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            edge_onnx, cloud_onnx = _sources(family, Path(tmp), say)
            manifest = _build(family, edge_onnx, cloud_onnx, stage, say)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    stage.rename(out)
    say(f"{name}: built in {time.perf_counter() - start:.0f}s -> {out}")
    return manifest


def _sources(family: Family, tmp: Path, say: Progress) -> tuple[Path, Path]:
    """The ONNX files of the edge and cloud models."""
    if family.name == "fashion":
        return WEIGHTS_DIR / "fashion_edge.onnx", WEIGHTS_DIR / "fashion_cloud.onnx"
    from edgecascade.cloud.build.families import imagenet_export  # needs torch (the "build" extra)

    say(f"{family.name}: exporting pretrained EfficientNet-Lite0/Lite2 to ONNX")
    edge = imagenet_export.export("edge", tmp / "edge.onnx")
    return edge, imagenet_export.export("cloud", tmp / "cloud.onnx")


def _build(family: Family, edge_onnx: Path, cloud_onnx: Path, out: Path, say: Progress) -> Manifest:
    core = ov.Core()
    (out / "cloud").mkdir(parents=True)
    shutil.copyfile(cloud_onnx, out / CLOUD_ONNX)
    labels = family.labels()
    (out / "labels.json").write_text(json.dumps(labels, ensure_ascii=False, indent=1) + "\n")

    say(f"{family.name}: converting the edge model to FP32 IR")
    fp32 = ov.convert_model(edge_onnx)
    ov.save_model(fp32, out / EDGE_FP32, compress_to_fp16=False)

    data = _data(family)
    say(f"{family.name}: quantizing the edge model to INT8 ({len(data.quantization)} images)")
    ov.save_model(quantize_int8(fp32, data.quantization), out / EDGE_INT8, compress_to_fp16=False)

    say(f"{family.name}: evaluating on {data.notes['evaluation']}")
    edge_fp32 = core.compile_model(out / EDGE_FP32, "CPU", F32)
    edge_int8 = core.compile_model(out / EDGE_INT8, "CPU")
    cloud = core.compile_model(out / CLOUD_ONNX, "CPU", F32)
    fp32_logits = batched_logits(edge_fp32, data.edge.images)
    int8_logits = batched_logits(edge_int8, data.edge.images)
    cloud_logits = batched_logits(cloud, data.cloud.images)
    truth = data.edge.labels
    say(f"{family.name}: edge and cloud logits of the calibration split")
    calibration: dict[str, NDArray[Any]] = {
        **_with_mirror(edge_int8, data.calibration_edge.images, "edge_logits"),
        "cloud_logits": batched_logits(cloud, data.calibration_cloud.images),
        "labels": data.calibration_edge.labels,
    }
    # The answer from every view (members and mirror) on the calibration split, at T = 1.
    metrics = {"calibration_accuracy": _views_accuracy(calibration, "edge_logits")}
    if family.name == "fashion":
        say(f"{family.name}: quantizing the edge ensemble (a baseline) to INT8")
        ov.save_model(
            quantize_int8(ov.convert_model(BASELINE_ONNX), data.quantization),
            out / BASELINE_INT8,
            compress_to_fp16=False,
        )
        baseline = core.compile_model(out / BASELINE_INT8, "CPU")
        calibration |= _with_mirror(baseline, data.calibration_edge.images, BASELINE_LOGITS)
        metrics[f"{FASHION_BASELINE_EDGE}_calibration_accuracy"] = _views_accuracy(
            calibration, BASELINE_LOGITS
        )
        np.savez_compressed(
            out / "test_predictions.npz",
            edge_logits=int8_logits,
            edge_logits_mirrored=batched_logits(edge_int8, mirrored(data.edge.images)),
            **_with_mirror(baseline, data.edge.images, BASELINE_LOGITS),
            cloud_logits=cloud_logits,
            labels=truth,
        )
    np.savez_compressed(out / "calibration.npz", **calibration)

    say(f"{family.name}: measuring edge latency ({LATENCY_ITERATIONS} interleaved runs)")
    latency = _latency_ms(core, out, data.edge.images[0])

    manifest = Manifest(
        family=family.name,
        version=1,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        labels=labels,
        labels_sha256=labels_sha256(labels),
        edge=ModelSpec(
            name=f"{family.name}_edge",
            version=1,
            precision="int8",
            files=_hashes(out, *_ir_files(EDGE_INT8), *_ir_files(EDGE_FP32)),
            preprocessing=family.edge,
            metrics={
                "fp32_accuracy": _accuracy(fp32_logits, truth),
                "int8_accuracy": _accuracy(int8_logits, truth),
                "members": int8_logits.shape[1] if int8_logits.ndim == 3 else 1,
                **metrics,
                "fp32_latency_ms": latency["fp32"],
                "int8_latency_ms": latency["int8"],
            },
        ),
        cloud=ModelSpec(
            name=f"{family.name}_cloud",
            version=1,
            precision="fp32",
            files=_hashes(out, CLOUD_ONNX),
            preprocessing=family.cloud,
            metrics={"accuracy": _accuracy(cloud_logits, truth)},
        ),
        policy=RoutingPolicy(threshold=family.threshold),
        notes={
            **data.notes,
            "latency": f"single-image p50 over {LATENCY_ITERATIONS} interleaved runs on "
            f"{core.get_property('CPU', 'FULL_DEVICE_NAME')}; fp32 with "
            "INFERENCE_PRECISION_HINT=f32, int8 with the CPU plugin defaults",
            "metrics": "measured for reporting only, never used for tuning; "
            "calibration_accuracy (and a baseline's): INT8, answering with the mean softmax of "
            "every view (each member, on the image and on its mirror) on the calibration split",
            "policy": "family default threshold; the router calibrates its own",
        },
    )
    return save_build_manifest(manifest, out / "manifest.json")


def quantize_int8(fp32: ov.Model, calibration: NDArray[np.uint8]) -> ov.Model:
    """`fp32` quantized to INT8 by nncf (post-training) on the [N, H, W, C] images."""
    nncf.set_log_level(logging.WARNING)
    items = [image[None] for image in calibration]
    return nncf.quantize(fp32, nncf.Dataset(items), subset_size=len(items))


@dataclass(frozen=True)
class _Data:
    """Evaluation and calibration images per tier (same labels), the images nncf quantizes the
    edge model on, and notes."""

    edge: LabelledImages
    cloud: LabelledImages
    calibration_edge: LabelledImages
    calibration_cloud: LabelledImages
    quantization: NDArray[np.uint8]  # [N, H, W, C]
    notes: dict[str, str]


def _data(family: Family) -> _Data:
    if family.name == "fashion":
        test = fashion("test")
        test = LabelledImages(test.images[..., None], test.labels)
        calibration = fashion("calibration")
        calibration = LabelledImages(calibration.images[..., None], calibration.labels)
        return _Data(
            test,
            test,
            calibration,
            calibration,
            calibration.images[:CALIBRATION_IMAGES],
            {
                "evaluation": f"Fashion-MNIST test split ({len(test)} images)",
                "calibration": f"INT8 post-training quantization on the first "
                f"{CALIBRATION_IMAGES} images of the calibration split",
                "calibration_split": f"the Fashion-MNIST calibration split ({len(calibration)} "
                "images, the last 5k of the train images, never trained on)",
            },
        )
    smoke = imagenet_smoke()
    photos = [decode_image(f.path.read_bytes()) for f in smoke]
    labels = np.array([f.label for f in smoke], np.int64)
    rng = np.random.default_rng(0)
    crops = [_random_crop(photos[i % len(photos)], rng) for i in range(CALIBRATION_IMAGES)]
    crop_labels = labels[np.arange(CALIBRATION_IMAGES) % len(photos)]

    def tier(images: list[Image], spec: Preprocessing, truth: NDArray[np.int64]) -> LabelledImages:
        return LabelledImages(np.stack([prepare(image, spec) for image in images]), truth)

    calibration_edge = tier(crops, family.edge, crop_labels)
    return _Data(
        tier(photos, family.edge, labels),
        tier(photos, family.cloud, labels),
        calibration_edge,
        tier(crops, family.cloud, crop_labels),
        calibration_edge.images,
        {
            "evaluation": f"the {len(smoke)} labelled ImageNet photos of the foolbox wheel "
            "(a smoke check, not a benchmark)",
            "calibration": f"INT8 post-training quantization on {CALIBRATION_IMAGES} random "
            f"crops and flips of the same {len(smoke)} photos: the only labelled ImageNet "
            "images on the build machine, so the INT8 accuracy shown is optimistic",
            "calibration_split": f"{CALIBRATION_IMAGES} random crops (35-100% of the area) and "
            f"flips of the {len(smoke)} labelled smoke photos, labelled as their photo: the "
            "only labelled ImageNet images on the build machine, so the threshold is fit to "
            f"{len(smoke)} scenes and the same photos evaluate it; recalibrate "
            "(`edgecascade router calibrate`) on labelled images of the deployment",
        },
    )


def _random_crop(image: Image, rng: np.random.Generator) -> Image:
    """A random crop of 35-100% of the area with aspect 3/4-4/3, flipped half the time."""
    h, w = image.shape[:2]
    area = rng.uniform(0.35, 1.0) * h * w
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    ch, cw = min(h, round((area / aspect) ** 0.5)), min(w, round((area * aspect) ** 0.5))
    top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    crop = image[top : top + ch, left : left + cw]
    return from_cv2(cv2.flip(crop, 1)) if rng.random() < 0.5 else np.ascontiguousarray(crop)


def _ir_files(xml: str) -> list[str]:
    return [xml, xml.removesuffix(".xml") + ".bin"]


def _hashes(out: Path, *rels: str) -> dict[str, str]:
    return {rel: sha256_file(out / rel) for rel in rels}


def batched_logits(model: ov.CompiledModel, images: NDArray[np.uint8]) -> NDArray[np.float32]:
    """Batched inference: float32 logits [N, classes] ([N, members, classes] for an ensemble)."""
    parts: list[NDArray[np.float32]] = [
        model(images[i : i + BATCH])[0] for i in range(0, len(images), BATCH)
    ]
    return np.concatenate(parts).astype(np.float32)


def _with_mirror(model: ov.CompiledModel, images: NDArray[np.uint8], key: str) -> dict[str, Any]:
    """{key: logits of `images`, key + "_mirrored": logits of their mirror images}."""
    return {
        key: batched_logits(model, images),
        f"{key}_mirrored": batched_logits(model, mirrored(images)),
    }


def _views_accuracy(split: dict[str, NDArray[Any]], key: str) -> float:
    """Top-1 accuracy of the mean softmax over every view of `key` in `split` (each member, on
    each image and on its mirror) against split["labels"]."""
    views = [split[key], split[f"{key}_mirrored"]]
    logits = np.concatenate([v.reshape(len(v), -1, v.shape[-1]) for v in views], axis=1)
    answers = softmax(logits.astype(np.float64)).mean(axis=1).argmax(-1)
    return float((answers == split["labels"]).mean())


def _accuracy(logits: NDArray[np.float32], labels: NDArray[np.int64]) -> float:
    """Top-1 accuracy; of member 0, the one that answers, for an ensemble."""
    answers = logits[:, 0] if logits.ndim == 3 else logits
    return float((answers.argmax(-1) == labels).mean())


def _latency_ms(core: ov.Core, out: Path, image: NDArray[np.uint8]) -> dict[str, float]:
    """Single-image p50 latency of the FP32 and INT8 edge models, measured interleaved."""
    return interleaved_p50_ms(
        {
            key: latency_request(core, core.read_model(out / rel), image[None], config)
            for key, rel, config in [("fp32", EDGE_FP32, F32), ("int8", EDGE_INT8, {})]
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Build model families.")
    parser.add_argument("families", nargs="+", choices=sorted(FAMILIES))
    parser.add_argument(
        "--root", type=Path, help="artifacts root (default: $EDGECASCADE_ARTIFACTS or ./artifacts)"
    )
    args = parser.parse_args()
    for name in args.families:
        manifest = build_family(name, args.root, progress=print)
        print(json.dumps({"edge": manifest.edge.metrics, "cloud": manifest.cloud.metrics}))


if __name__ == "__main__":
    main()
