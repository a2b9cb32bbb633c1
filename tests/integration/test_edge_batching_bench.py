"""`bench edge` measures the agent as it starts by default, without dynamic batching, with two
worker processes and with two OpenVINO streams, and the CPU time per image of the agent, of
benchmark_app and of a bare grpc.aio echo server (per call)."""

import json
import subprocess

import pytest

from edgecascade.cloud.common.launcher import edgecascade_command
from edgecascade.cloud.common.manifest import Manifest

pytestmark = pytest.mark.integration


def test_bench_edge_reports_every_setup_with_cpu_per_image(
    fashion_manifest: Manifest, tmp_path
) -> None:
    report_path = tmp_path / "bench.json"
    command = edgecascade_command("bench", "edge", "--family", "fashion", "--precision", "int8",
               "--seconds", "1", "--clients", "4", "--report", str(report_path))  # fmt: skip
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    row = json.loads(report_path.read_text())["results"]["int8"]
    assert row["benchmark_app"]["cpu_ms_per_image"] > 0
    assert row["echo"]["images_per_s"] > 0 and row["echo"]["cpu_ms_per_call"] > 0
    for runner in ("agent_unary", "agent_stream", "agent_kserve_batch", "agent_kserve_batch64"):
        setups = (row["unbatched"], row["workers2"], row["streams2"])
        for measured in (row[runner], *(setup[runner] for setup in setups)):
            assert measured["images_per_s"] > 0 and measured["cpu_ms_per_image"] > 0
            ratio = measured["images_per_s"] / row["benchmark_app"]["images_per_s"]
            assert measured["ratio"] == pytest.approx(ratio, abs=1e-3)
    assert "THROUGHPUT hint, 2 streams" in row["streams2"]["device"]
    assert "LATENCY hint, 1 streams" in row["device"]  # the default agent
    # the batched agent's executions by size: the KServe batches of 64 among them
    assert "64" in row["batches"] and sum(row["batches"].values()) > 0
    assert "setups side by side" in done.stdout
