"""`edgecascade models adapt` as a real process on a registry holding the built fashion family:
examples of the calibration split under a held-out corruption, answered by the real cloud ONNX
(OpenVINO on CPU). Good answers publish a new signed version; answers rolled to another class
are refused by the gate and leave the registry as it was; mistakes are one `error:` line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

from edgecascade.cloud.build.builder import F32, batched_logits
from edgecascade.cloud.build.corruptions import corrupt
from edgecascade.cloud.build.datasets import fashion
from edgecascade.cloud.common import signing
from edgecascade.cloud.common.examples import Example
from edgecascade.cloud.common.launcher import edgecascade_command
from edgecascade.cloud.common.paths import family_dir
from edgecascade.cloud.common.probabilities import softmax
from edgecascade.cloud.registry.examples import open_received, received_path
from edgecascade.cloud.registry.signing_keys import dev_key
from edgecascade.cloud.registry.store import Registry
from tests.integration.test_cli_errors import fails

pytestmark = pytest.mark.integration
EXAMPLES = 500


@pytest.fixture(scope="module")
def answered() -> tuple[np.ndarray, np.ndarray]:
    """Pixelated calibration images and the real cloud model's probabilities of them."""
    images = corrupt(fashion("calibration").images[:EXAMPLES], "pixelate", 3)[..., None]
    cloud = ov.Core().compile_model(family_dir("fashion") / "cloud" / "model.onnx", "CPU", F32)
    logits = batched_logits(cloud, images)
    return images, softmax(logits).astype(np.float32)


def registry_with(tmp_path: Path, images: np.ndarray, cloud: np.ndarray) -> Path:
    """A registry with the built family as v1 and one edge's uploads of these examples."""
    root = tmp_path / "registry"
    Registry(root).publish("fashion", family_dir("fashion"))
    with open_received(received_path(root, "fashion", "edge-1")) as store:
        for image, p in zip(images, cloud):
            store.add(Example.of("fashion", "fashion_edge:1", "escalated", image, p, p))
    return root


def adapt(root: Path, report: Path) -> dict:
    done = subprocess.run(
        edgecascade_command(
            "models", "adapt", "--family", "fashion", "--registry", str(root),
            "--epochs", "3", "--report", str(report),
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "gate" in done.stdout
    out: dict = json.loads(report.read_text())
    return out


def test_good_examples_publish_a_new_signed_version(answered, tmp_path):
    root = registry_with(tmp_path, *answered)
    out = adapt(root, tmp_path / "report.json")
    assert out["gate"]["passed"], out["gate"]
    assert out["examples"]["training"] + out["examples"]["held_out"] == EXAMPLES
    assert out["examples"]["bytes"] > EXAMPLES * 28 * 28
    registry = Registry(root)
    assert out["published_version"] == 2 == registry.current_version("fashion")
    public = dev_key().public_key()
    text = registry.manifest_file("fashion", 2).read_text()
    manifest = signing.verify_json(text, {signing.key_id(public): public})
    assert manifest.edge.version == 2 and manifest.cloud == registry.get("fashion", 1).cloud
    for rel in manifest.edge.files.values():
        registry.verify_blob(rel)
    # calibrated for the new model on the calibration split against the served cloud model's
    # answers, as the build does: most clean inputs stay at the edge
    assert out["threshold"]["on"].startswith("calibration split (5000 images")
    assert manifest.policy.threshold == out["threshold"]["threshold"]
    assert manifest.policy.threshold != registry.get("fashion", 1).policy.threshold
    assert 0.0 < out["threshold"]["escalation_rate"] < 0.5
    assert "picked by models adapt on the calibration split" in manifest.notes["threshold"]


def test_the_gate_refuses_a_model_taught_wrong_answers(answered, tmp_path):
    images, cloud = answered
    root = registry_with(tmp_path, images, np.roll(cloud, 3, axis=-1))
    before = sorted(p.relative_to(root) for p in root.rglob("*") if "examples" not in p.parts)
    out = adapt(root, tmp_path / "report.json")
    assert not out["gate"]["passed"] and out["published_version"] is None
    assert any("lost more than 0.3 pt" in reason for reason in out["gate"]["reasons"]), out
    after = sorted(p.relative_to(root) for p in root.rglob("*") if "examples" not in p.parts)
    assert after == before and Registry(root).versions("fashion") == [1]


def test_mistakes_are_one_error_line(tmp_path):
    assert "family" in fails("models", "adapt", "--family", "nope")
    empty = tmp_path / "registry"
    assert "no fashion examples" in fails(
        "models", "adapt", "--family", "fashion", "--registry", str(empty)
    )
    missing = tmp_path / "gone.sqlite"
    assert "gone.sqlite" in fails(
        "models", "adapt", "--family", "fashion", "--examples", str(missing)
    )
