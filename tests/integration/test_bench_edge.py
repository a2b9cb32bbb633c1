"""`edgecascade bench edge` on a small budget writes a report with the expected keys."""

import json
import subprocess

import pytest

from edgecascade.cloud.common.launcher import edgecascade_command

pytestmark = pytest.mark.integration


def test_bench_edge_writes_a_report(fashion_manifest, tmp_path):
    report_path = tmp_path / "bench.json"
    command = edgecascade_command("bench", "edge", "--family", "fashion",
               "--seconds", "1", "--clients", "2", "--report", str(report_path))  # fmt: skip
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(report_path.read_text())
    assert report["family"] == "fashion" and report["edge_model"] == fashion_manifest.edge.key
    assert set(report["results"]) == {"int8", "fp32"}
    assert report["edge_inferences_per_image"] == (2 if fashion_manifest.policy.mirror else 1)
    for precision, row in report["results"].items():
        assert row["model"] == ("edge/model.xml" if precision == "int8" else "edge/fp32/model.xml")
        assert "streams" in row["device"]
        assert row["escalations"] == 0, "threshold 0: the edge path alone is measured"
        for runner in ("benchmark_app", "agent_unary", "agent_stream", "agent_kserve_batch"):
            r = row[runner]
            assert r["images_per_s"] > 0
            assert 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p99"]
        for runner in ("agent_unary", "agent_stream", "agent_kserve_batch"):
            ratio = row[runner]["images_per_s"] / row["benchmark_app"]["images_per_s"]
            assert row[runner]["ratio"] == pytest.approx(ratio, abs=1e-3)
    assert "benchmark_app" in done.stdout and "agent_stream" in done.stdout
    # plaintext vs mutual TLS + token, side by side
    for runner in ("unary_one_client", "unary", "stream"):
        row = report["tls"][runner]
        for mode in ("plaintext", "mutual_tls"):
            assert row[mode]["images_per_s"] > 0 and row[mode]["p50_ms"] > 0
        plain, mtls = row["plaintext"], row["mutual_tls"]
        assert row["throughput_cost"] == pytest.approx(
            1 - mtls["images_per_s"] / plain["images_per_s"], abs=1e-3
        )
        assert row["p50_cost"] == pytest.approx(mtls["p50_ms"] / plain["p50_ms"] - 1, abs=1e-3)
    assert "mutual TLS" in done.stdout
