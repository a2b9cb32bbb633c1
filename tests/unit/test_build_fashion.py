"""The fashion family builds from the committed ONNX weights into a verifiable manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

from edgecascade.cloud.build.builder import build_family
from edgecascade.cloud.build.families import FAMILIES, FASHION_BASELINE_EDGE, WEIGHTS_DIR
from edgecascade.cloud.common.manifest import INPUT_NAME, OUTPUT_NAME, Manifest
from edgecascade.cloud.common.paths import baseline_model_file, family_dir, manifest_path


@pytest.fixture(scope="session")
def fashion_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("artifacts")
    build_family("fashion", root)
    return root


# Edge models give logits [N, members, classes]: the served edge is one wide CNN, the baseline
# the build quantizes but never serves an ensemble of 3 small CNNs; the cloud's are [N, classes].
LOGITS = {"edge": "[?,1,10]", "cloud": "[?,10]", FASHION_BASELINE_EDGE: "[?,3,10]"}


def _assert_signature(model: ov.Model, shape: str, logits_shape: str) -> None:
    (image,), (logits,) = model.inputs, model.outputs
    assert image.any_name == INPUT_NAME and image.element_type == ov.Type.u8
    assert str(image.partial_shape) == shape
    assert logits.any_name == OUTPUT_NAME and logits.element_type == ov.Type.f32
    assert str(logits.partial_shape) == logits_shape


@pytest.mark.parametrize("tier", LOGITS)
def test_committed_onnx_has_the_agreed_signature(tier: str) -> None:
    model = ov.Core().read_model(WEIGHTS_DIR / f"fashion_{tier}.onnx")
    _assert_signature(model, "[?,28,28,1]", LOGITS[tier])


def test_committed_weights_are_small() -> None:
    # issue 13: up to 20 MB of committed weights (the 1.7M-parameter cloud ResNet is 6.8 MB)
    assert sum(p.stat().st_size for p in WEIGHTS_DIR.glob("*.onnx")) <= 20 * 10**6


def test_families_registry() -> None:
    assert set(FAMILIES) == {"fashion", "imagenet"}
    assert all(name == family.name for name, family in FAMILIES.items())
    assert len(FAMILIES["fashion"].labels()) == 10
    assert FAMILIES["imagenet"].edge.size == 224 and FAMILIES["imagenet"].cloud.size == 260


def test_unknown_family_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown family"):
        build_family("nope", tmp_path)


def test_manifest_verifies_and_pins_every_artifact(fashion_root: Path) -> None:
    folder = family_dir("fashion", fashion_root)
    manifest = Manifest.load(manifest_path("fashion", fashion_root))
    manifest.verify(folder)
    assert (manifest.edge.name, manifest.cloud.name) == ("fashion_edge", "fashion_cloud")
    assert set(manifest.edge.files) == {
        "edge/model.xml", "edge/model.bin", "edge/fp32/model.xml", "edge/fp32/model.bin",
    }  # fmt: skip
    assert set(manifest.cloud.files) == {"cloud/model.onnx"}
    assert json.loads((folder / "labels.json").read_text()) == manifest.labels
    assert manifest.policy.threshold == FAMILIES["fashion"].threshold
    assert not list(fashion_root.glob(".*.building"))


def test_built_models_keep_the_signature(fashion_root: Path) -> None:
    folder = family_dir("fashion", fashion_root)
    for rel in ["edge/model.xml", "edge/fp32/model.xml", "cloud/model.onnx"]:
        logits = LOGITS[rel.split("/")[0]]
        _assert_signature(ov.Core().read_model(folder / rel), "[?,28,28,1]", logits)


def test_metrics_are_plausible(fashion_root: Path) -> None:
    manifest = Manifest.load(manifest_path("fashion", fashion_root))
    edge, cloud = manifest.edge.metrics, manifest.cloud.metrics
    assert (
        edge["int8_accuracy"] > 0.85 and abs(edge["int8_accuracy"] - edge["fp32_accuracy"]) < 0.01
    )
    assert cloud["accuracy"] > edge["fp32_accuracy"]
    assert edge["int8_latency_ms"] > 0 and edge["fp32_latency_ms"] > 0


def test_prediction_files_for_the_router(fashion_root: Path) -> None:
    folder = family_dir("fashion", fashion_root)
    manifest = Manifest.load(folder / "manifest.json")
    for name, n in [("calibration.npz", 5_000), ("test_predictions.npz", 10_000)]:
        data = np.load(folder / name)
        assert manifest.edge.metrics["members"] == 1
        assert data["edge_logits"].shape == data["edge_logits_mirrored"].shape == (n, 1, 10)
        assert data["cloud_logits"].shape == (n, 10) and data["labels"].shape == (n,)
        baseline = f"{FASHION_BASELINE_EDGE}_logits"
        assert data[baseline].shape == data[f"{baseline}_mirrored"].shape == (n, 3, 10)
    ensemble = ov.Core().read_model(baseline_model_file(folder, FASHION_BASELINE_EDGE))
    _assert_signature(ensemble, "[?,28,28,1]", LOGITS[FASHION_BASELINE_EDGE])
    assert not any(name.startswith("baselines/") for name in manifest.edge.files)  # not served
    test = np.load(folder / "test_predictions.npz")
    accuracy = (test["edge_logits"][:, 0].argmax(-1) == test["labels"]).mean()
    assert accuracy == pytest.approx(manifest.edge.metrics["int8_accuracy"])


def test_the_served_wide_cnn_is_at_least_as_accurate_as_the_ensemble(fashion_root: Path) -> None:
    """The build report: on the calibration split, answering from every view (members and
    mirror), the served edge model is no less accurate than the 3-member ensemble it replaced;
    the figures are those of the stored logits."""
    folder = family_dir("fashion", fashion_root)
    metrics = Manifest.load(folder / "manifest.json").edge.metrics
    served = metrics["calibration_accuracy"]
    assert served >= metrics[f"{FASHION_BASELINE_EDGE}_calibration_accuracy"] > 0.9
    data = np.load(folder / "calibration.npz")
    views = np.concatenate([data["edge_logits"], data["edge_logits_mirrored"]], axis=1)
    probabilities = np.exp(views - views.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    answers = probabilities.mean(1).argmax(-1)
    assert (answers == data["labels"]).mean() == pytest.approx(served)


def test_verify_detects_a_changed_artifact(fashion_root: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(family_dir("fashion", fashion_root), tmp_path / "fashion")
    with open(folder / "edge/model.bin", "r+b") as f:
        byte = f.read(1)
        f.seek(0)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ValueError, match="edge/model.bin"):
        Manifest.load(folder / "manifest.json").verify(folder)
