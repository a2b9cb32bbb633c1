"""The gateway's count of answers by gRPC status: HAProxy's table rendered, read and named as
gRPC's Prometheus interceptors name it (the real HAProxy is in test_gateway_http)."""

import grpc
import pytest

from edgecascade.router.gateway.haproxy import (
    ALLOWED_METHODS,
    KNOWN_METHODS,
    KSERVE,
    GatewayConfig,
    check_config,
)
from edgecascade.router.gateway.metrics import code_of, labels_of, parse_table

# `show table grpc_codes` as HAProxy 2.6 prints it
TABLE = """# table: grpc_codes, type: string, size:4096, used:5
0x5647ad0679b8: key=/inference.GRPCInferenceService/ModelInfer||200 use=0 exp=0 gpc0=12
0x7fada404bfb8: key=/inference.GRPCInferenceService/ModelMetadata|5|200 use=0 exp=0 gpc0=2
0x5647ad0687e8: key=/inference.GRPCInferenceService/ModelInfer|14|200 use=1 exp=0 gpc0=1
0x5647ad067c38: key=other|7|200 use=0 exp=0 gpc0=3
0x7fada404c8c8: key=/grpc.health.v1.Health/Check||503 use=0 exp=0 gpc0=4

"""


@pytest.mark.parametrize(
    ("grpc_status", "http_status", "code"),
    [
        ("", 200, grpc.StatusCode.OK),  # status in the trailers after the message
        ("0", 200, grpc.StatusCode.OK),
        ("5", 200, grpc.StatusCode.NOT_FOUND),
        ("16", 200, grpc.StatusCode.UNAUTHENTICATED),
        ("99", 200, grpc.StatusCode.UNKNOWN),
        ("x", 200, grpc.StatusCode.UNKNOWN),
        ("", 503, grpc.StatusCode.UNAVAILABLE),
        ("", 404, grpc.StatusCode.UNIMPLEMENTED),
        ("", 418, grpc.StatusCode.UNKNOWN),
    ],
)
def test_an_answer_has_the_grpc_code_a_client_would_see(
    grpc_status: str, http_status: int, code: grpc.StatusCode
) -> None:
    assert code_of(grpc_status, http_status) == code


def test_the_table_reads_as_counts_by_service_method_and_code() -> None:
    counts = parse_table(TABLE)
    kserve = KSERVE.strip("/")
    assert counts == {
        (kserve, "ModelInfer", "OK"): 12,
        (kserve, "ModelMetadata", "NOT_FOUND"): 2,
        (kserve, "ModelInfer", "UNAVAILABLE"): 1,
        ("other", "other", "PERMISSION_DENIED"): 3,
        ("grpc.health.v1.Health", "Check", "UNAVAILABLE"): 4,
    }
    assert labels_of("other") == ("other", "other")
    assert parse_table("# table: grpc_codes, type: string, size:4096, used:0\n") == {}


def test_counting_renders_a_configuration_haproxy_accepts(tmp_path) -> None:
    config = GatewayConfig(
        ["127.0.0.1:8001"],
        "127.0.0.1:9000",
        9100,
        metrics=f"unix@{tmp_path / 'exporter.sock'}",
        admin_socket=tmp_path / "admin.sock",
        rest_socket=tmp_path / "rest.sock",
        count_codes=True,
    )
    text = config.render()
    (tmp_path / "haproxy.cfg").write_text(text)
    check_config(tmp_path / "haproxy.cfg")
    lines = text.splitlines()
    (known,) = [line for line in lines if line.startswith("    acl known_method path ")]
    assert set(known.split()[3:]) == set(KNOWN_METHODS) > set(ALLOWED_METHODS)
    assert sum("track-sc0 var(txn.grpc_key) table grpc_codes" in line for line in lines) == 2
    assert f"    bind unix@{tmp_path / 'rest.sock'} mode 600 name rest proto h2" in lines
    # the REST face's socket skips the caller check, never the allow-list
    (allow,) = [line for line in lines if "int(7)" in line]
    assert "so_name" not in allow
    assert "stick-table type string" in text
    assert "grpc_codes" not in GatewayConfig(["127.0.0.1:8001"], "127.0.0.1:9000", 9100).render()
