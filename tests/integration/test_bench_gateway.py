"""`bench gateway` measures every path side by side (plaintext and mutual TLS, straight to
Triton and through the gateway; a gateway counting gRPC codes; REST straight and through the
gateway) on the real Triton and HAProxy, then the four paths of the mutual-TLS comparison on
their own, and reports what each adds."""

import json
from pathlib import Path

import pytest

from edgecascade.cloud.common.manifest import Manifest
from edgecascade.router.gateway.bench import run_bench

pytestmark = pytest.mark.integration


def test_the_report_holds_every_path_and_what_mutual_tls_adds(
    fashion_manifest: Manifest, tmp_path: Path
) -> None:
    report = tmp_path / "bench-gateway.json"
    result = run_bench(report, calls=20, warmup=5)
    assert json.loads(report.read_text()) == result
    latency = result["latency_ms"]
    assert set(latency) == {
        "direct",
        "gateway",
        "gateway_counting",
        "direct_mtls",
        "gateway_mtls",
        "direct_rest",
        "gateway_rest",
    }
    assert all(0 < path["p50"] <= path["p99"] for path in latency.values())
    # mutual TLS is judged on the four paths measured on their own (each Triton half the calls)
    tls = result["tls_latency_ms"]
    assert set(tls) == {"direct", "gateway", "direct_mtls", "gateway_mtls"}
    assert all(0 < path["p50"] <= path["p99"] for path in tls.values())
    share = tls["gateway_mtls"]["p50"] / tls["gateway"]["p50"] - 1
    assert result["mtls_added_share_of_gateway_p50"] == pytest.approx(share)
    assert result["goal"]["mtls_met"] == (share <= 0.10)
    added = result["mtls_added_ms"]["gateway"]["p50_difference"]
    assert added == pytest.approx(tls["gateway_mtls"]["p50"] - tls["gateway"]["p50"])
    among_seven = latency["gateway_mtls"]["p50"] / latency["gateway"]["p50"] - 1
    assert result["mtls_added_share_among_seven_paths"] == pytest.approx(among_seven)
    rest = result["rest"]["gateway_added_ms"]["p50_difference"]
    assert rest == pytest.approx(latency["gateway_rest"]["p50"] - latency["direct_rest"]["p50"])
