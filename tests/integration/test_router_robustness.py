"""`edgecascade router robustness` on the real fashion artifacts (edge INT8 IR and cloud ONNX
through OpenVINO), on 200 test images and two corruptions."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.paths import family_dir
from edgecascade.edge.cli import app
from edgecascade.router.policy.policies import policy_from_manifest

N = 200
KEYS = {"edge_only", "cloud_only", "cascade", "escalation_rate", "cloud_right_when_escalated"}


@pytest.mark.integration
def test_robustness_report(fashion_manifest: Manifest, tmp_path: Path) -> None:
    out = tmp_path / "robustness.json"
    args = ["router", "robustness", "--family", "fashion", "--limit", str(N), "--out", str(out)]
    args += ["--corruption", "gaussian_blur", "--corruption", "jpeg"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"fashion {N} test images" in result.output
    report = json.loads(out.read_text())
    policy = policy_from_manifest(fashion_manifest.policy)
    assert report["images"] == N and report["policy"]["label"] == policy.label
    assert report["policy"]["threshold"] == fashion_manifest.policy.threshold

    # Clean images: the same answers and escalations as the build's own test predictions.
    predictions = np.load(family_dir("fashion") / "test_predictions.npz")
    labels = predictions["labels"][:N]
    views = policy.views(predictions["edge_logits"][:N], predictions["edge_logits_mirrored"][:N])
    edge = policy.probabilities(views).mean(axis=-2).argmax(-1)
    escalated = policy.escalate(policy.confidence(views))
    cloud = predictions["cloud_logits"][:N].argmax(-1)
    clean = report["clean"]
    assert set(clean) == KEYS
    assert clean["edge_only"] == pytest.approx((edge == labels).mean(), abs=1.5 / N)
    assert clean["cloud_only"] == pytest.approx((cloud == labels).mean(), abs=1.5 / N)
    assert clean["escalation_rate"] == pytest.approx(escalated.mean(), abs=1.5 / N)

    rows = report["corrupted"]
    assert [(r["corruption"], r["severity"]) for r in rows] == [
        (name, s) for name in ("gaussian_blur", "jpeg") for s in range(1, 6)
    ]
    for row in rows:
        assert KEYS <= set(row) and row["in_training"] == (row["corruption"] == "gaussian_blur")
        # only escalated answers can change, and the cascade is right only where one tier is
        assert abs(row["cascade"] - row["edge_only"]) <= row["escalation_rate"] + 1e-9
        assert row["cascade"] <= row["edge_only"] + row["cloud_only"]
        loss = clean["edge_only"] - row["edge_only"]
        if loss > 0:
            assert row["recovered"] == pytest.approx((row["cascade"] - row["edge_only"]) / loss)
    blur = [r["edge_only"] for r in rows if r["corruption"] == "gaussian_blur"]
    assert blur[-1] < blur[0] - 0.2  # sigma 2.5 hurts the edge far more than sigma 0.5

    for group, flag in [("in_training", True), ("held_out", False)]:
        mine = [r for r in rows if r["in_training"] == flag]
        mean = report["average"][group]
        assert mean["rows"] == 5
        assert mean["cloud_only"] == pytest.approx(np.mean([r["cloud_only"] for r in mine]))
        assert mean["cloud_minus_edge_pt"] == pytest.approx(
            100 * (mean["cloud_only"] - mean["edge_only"])
        )
    assert report["goals"]["cloud_margin_pt"] == report["average"]["all"]["cloud_minus_edge_pt"]
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
