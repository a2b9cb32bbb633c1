"""`edgecascade demo --scenario drift` as a user runs it, on few frames: real Triton, gateway
(ModelSync) and agent processes, one adapt round; the report's shape and the facts that must
hold, the PNG, nothing left running."""

import json
import subprocess

import pytest

from edgecascade.cloud.common.launcher import edgecascade_command
from tests.integration.test_demo import leftovers, tagged_environment

pytestmark = pytest.mark.integration
CLEAN, EXAMPLES, AFTER = 100, 300, 300


def test_the_drift_demo_adapts_and_rolls_out_with_no_failed_request(fashion_manifest, tmp_path):
    report_path = tmp_path / "drift.json"
    env, tag = tagged_environment()
    run = subprocess.run(
        edgecascade_command(
            "demo", "--scenario", "drift", "--clean-frames", str(CLEAN),
            "--examples", str(EXAMPLES), "--after-frames", str(AFTER), "--epochs", "4",
            "--audit-rate", "0.3", "--fps", "60", "--report", str(report_path),
        ),
        capture_output=True,
        text=True,
        timeout=400,
        env=env | {"COLUMNS": "120"},
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(report_path.read_text())
    phases = report["phases"]
    assert list(phases) == ["clean", "shifted_before", "adapting", "shifted_after"]
    assert report["failed_requests"] == 0 and report["stream_failure"] == ""
    assert report["adapt"]["examples"]["total"] >= EXAMPLES
    moments = report["moments"]
    assert CLEAN == moments["shift"] < moments["round_start"] < moments["round_end"]
    assert phases["clean"]["escalation_rate"] < phases["shifted_before"]["escalation_rate"]
    old, new = report["versions"]["edge"]
    assert (
        old == fashion_manifest.edge.key
        and report["versions"]["cloud"] == fashion_manifest.cloud.key
    )
    if report["adapt"]["gate"]["passed"]:
        assert old != new and report["edge_versions"] == [old, new]
        assert report["versions"]["manifest"] == [1, 2]
        # published before the round's process exits, the agent may switch before round_end
        assert moments["round_start"] < moments["rollout"]
        assert phases["shifted_after"]["answered"] == AFTER
        # the adapted model answers the shifted stream better; its threshold is calibrated on
        # the clean calibration split (as the build's), so escalation is not what must fall
        edge = report["shifted"]["accuracy_edge"]
        assert edge["after"] > edge["before"]
        assert report["adapt"]["threshold"]["on"].startswith("calibration split")
        assert "answers with the new version" in run.stdout
    else:  # a small round may lose more than the gate's 0.3 pt on the clean split
        assert new == old and report["versions"]["manifest"] == [1, 1]
        assert moments["rollout"] is None and report["adapt"]["published_version"] is None
        assert "gate refused, nothing published" in run.stdout
    uplink = report["uplink_bytes"]
    assert uplink["examples"] >= EXAMPLES and uplink["example_bytes"] > EXAMPLES * 28 * 28
    assert uplink["images_to_cloud_bytes"] > 0
    assert report["adapt"]["seconds"] > 0
    assert open(report["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert "adapt round begins" in run.stdout
    assert not leftovers(tag), "the drift demo left processes running"
