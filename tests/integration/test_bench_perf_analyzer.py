"""Triton's perf_analyzer, unmodified, runs against a real edge agent, a real gateway and a real
Triton (`edgecascade bench perf-analyzer`), over gRPC and over HTTP/REST: it reads each
server's ModelStatistics, and the server-side times it derives from them fit inside the
latency it measured (issue 15, item 2)."""

import json
from pathlib import Path

import pytest

from edgecascade.cloud.common.manifest import Manifest
from edgecascade.edge.tools.bench_perf_analyzer import Window, run_bench
from tests.integration.test_cli_errors import fails

pytestmark = pytest.mark.integration

TIERS = {"agent", "gateway", "triton", "triton_cloud_model"}
TARGETS = TIERS | {f"{name}_http" for name in TIERS}


def test_perf_analyzer_measures_every_tier_with_its_server_statistics(
    fashion_manifest: Manifest, tmp_path: Path
) -> None:
    report = tmp_path / "perf.json"
    window = Window("1:2:1", interval_ms=500, stability=50, max_trials=6)
    result = run_bench(report, window, 20, ("grpc", "http"))
    assert json.loads(report.read_text()) == result
    assert set(result["targets"]) == TARGETS
    for suffix, protocol in (("", "grpc"), ("_http", "http")):
        assert result["targets"][f"agent{suffix}"]["model"] == "fashion"
        cloud = result["targets"][f"triton_cloud_model{suffix}"]
        assert cloud["model"] == fashion_manifest.cloud.name and cloud["protocol"] == protocol
    for name, target in result["targets"].items():
        rows = target["rows"]
        measured = [row["concurrency"] for row in rows]
        assert measured, name  # perf_analyzer may leave out a window it cannot stabilize
        assert sorted(measured + target["unstable_concurrencies"]) == [1, 2], name
        for row in rows:
            assert row["throughput"] > 0 and 0 < row["p50_us"] <= row["p99_us"], (name, row)
            # perf_analyzer found the model's statistics and they are in its units: the
            # server's share is there and fits in what the client waited (the network's share,
            # the remainder, is not negative).
            assert row["server_compute_infer_us"] > 0, (name, row)
            assert row["network_us"] >= 0, (name, row)


def test_a_malformed_concurrency_range_is_one_error_line() -> None:
    message = fails("bench", "perf-analyzer", "--concurrency-range", "1:x")
    assert message == "--concurrency-range '1:x': give start[:end[:step]], e.g. 1:4:3"


def test_the_window_names_perf_analyzers_concurrencies() -> None:
    assert Window("1:4:3").concurrencies() == [1, 4]
    assert Window("2").concurrencies() == [2]
    assert Window("1:3").concurrencies() == [1, 2, 3]


def test_an_unknown_protocol_is_one_error_line() -> None:
    message = fails("bench", "perf-analyzer", "--protocol", "quic")
    assert message == "--protocol 'quic': give grpc or http"
