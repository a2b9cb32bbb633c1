"""`edgecascade demo` as a user runs it: real processes, a report, nothing left behind."""

import json
import os
import signal
import subprocess
import time
import uuid

import psutil
import pytest

from edgecascade.cloud.common.launcher import edgecascade_command

pytestmark = pytest.mark.integration


def test_demo_streams_frames_reports_and_stops_everything(fashion_manifest, tmp_path):
    report_path = tmp_path / "demo.json"
    env, tag = tagged_environment()
    run = subprocess.run(
        edgecascade_command("demo", "--limit", "400", "--report", str(report_path)),
        capture_output=True,
        text=True,
        timeout=300,
        env=env | {"COLUMNS": "120"},
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["n"] == 400 and report["errors"] == 0 and report["degraded"] == 0
    acc = report["accuracy"]
    assert 0.8 < acc["edge_only"] <= acc["cascade"] and acc["edge_only"] < acc["cloud_only"]
    assert 0 < report["escalation_rate"] < 0.5
    for hop in ("edge", "cloud", "end_to_end"):
        p = report["latency_ms"][hop]
        assert 0 < p["p50"] <= p["p95"] <= p["p99"]
    # The fashion cloud model takes 28x28x1 uint8: 784 bytes per escalated frame.
    assert report["bytes_to_cloud"] == round(report["escalation_rate"] * 400) * 784
    assert report["versions"] == {
        "edge": fashion_manifest.edge.key,
        "cloud": fashion_manifest.cloud.key,
    }
    assert report["threshold"] == pytest.approx(fashion_manifest.policy.threshold, abs=1e-6)
    assert report["insecure_hops"] == []  # mutual TLS client -> agent and agent -> Triton
    assert "(mutual TLS on both hops, a token)" in run.stdout
    assert "accuracy cascade" in run.stdout
    assert not leftovers(tag), "demo left processes running"


TAG = "EDGECASCADE_TEST_RUN"


def tagged_environment() -> tuple[dict[str, str], str]:
    """This environment with a fresh tag, which every process a command starts inherits."""
    tag = uuid.uuid4().hex
    return os.environ | {TAG: tag}, tag


def leftovers(tag: str) -> list[str]:
    """Triton servers and edge agents still running that a command run with `tag` started
    (other runs' processes on this machine do not count)."""
    found = []
    for p in psutil.process_iter():
        try:
            cmdline = " ".join(p.cmdline())
            ours = p.environ().get(TAG) == tag
        except psutil.Error:  # exited meanwhile, or not ours to read
            continue
        if ours and ("tritonserver" in cmdline or "edge serve" in cmdline):
            found.append(cmdline)
    return found


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_demo_stops_every_process_it_started(fashion_manifest, tmp_path, sig):
    env, tag = tagged_environment()
    demo = subprocess.Popen(
        edgecascade_command("demo", "--fps", "50", "--report", str(tmp_path / "r")),
        env=env | {"PYTHONFAULTHANDLER": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in demo.stdout:  # wait until both servers run and frames flow
        if "edge agent at" in line:
            break
    time.sleep(1.0)
    assert len(leftovers(tag)) >= 2, "Triton and the edge agent should be running"
    demo.send_signal(sig)
    try:
        demo.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # where it hangs: faulthandler's dump of every thread
        demo.send_signal(signal.SIGABRT)
        output = demo.communicate(timeout=30)[0]
        pytest.fail(f"the demo did not stop within 60 s of {sig.name}:\n{output[-6000:]}")
    assert demo.returncode != 0 and not (tmp_path / "r").exists()
    deadline = time.monotonic() + 15
    while leftovers(tag) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not leftovers(tag), "an interrupted demo left processes running"
