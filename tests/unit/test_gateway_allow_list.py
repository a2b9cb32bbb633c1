"""The gateway's HAProxy lets through only an allow-list of gRPC methods; Triton's model
control, shared-memory, trace and log methods are answered with PERMISSION_DENIED."""

import re

import pytest
from tritonclient.grpc import service_pb2

from edgecascade.cloud.common.auth import Callers, service_methods
from edgecascade.cloud.triton.server import ADMIN_KEY_HEADER
from edgecascade.router.gateway.haproxy import (
    KSERVE,
    MODEL_SYNC,
    CallerMaps,
    GatewayConfig,
    check_config,
)
from edgecascade.v1 import model_sync_pb2

TRITON_METHODS = {
    m.name for m in service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods
}
# Triton's model control, shared-memory, trace and log methods.
CONTROL = set(service_methods(KSERVE, "admin"))


def allowed_paths(text: str) -> set[str]:
    (line,) = re.findall(r"^\s*acl allowed_method path (.+)$", text, re.MULTILINE)
    return set(line.split())


def render(tmp_path, **kw) -> str:
    text = GatewayConfig(["127.0.0.1:8001"], "127.0.0.1:9000", 9100, **kw).render()
    (tmp_path / "haproxy.cfg").write_text(text)
    check_config(tmp_path / "haproxy.cfg")
    return text


def test_only_inference_metadata_health_and_statistics_reach_triton(tmp_path) -> None:
    text = render(tmp_path)
    allowed = allowed_paths(text)
    kserve = {p.removeprefix(KSERVE) for p in allowed if p.startswith(KSERVE)}
    assert kserve <= TRITON_METHODS
    assert CONTROL <= TRITON_METHODS  # the names are Triton's own
    assert kserve == TRITON_METHODS - CONTROL  # every other Triton method is control
    assert kserve >= {"ModelInfer", "ModelStreamInfer", "ServerReady", "ModelStatistics"}
    assert allowed - {KSERVE + m for m in kserve} == {
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
    }
    assert MODEL_SYNC not in text  # no ModelSync served: none of its methods allowed


def test_everything_else_gets_a_grpc_permission_denied(tmp_path) -> None:
    lines = render(tmp_path).splitlines()
    (message,) = [i for i, line in enumerate(lines) if "not allowed through the gateway" in line]
    (mark,) = [i for i, line in enumerate(lines) if "int(7)" in line]
    (answer,) = [i for i, line in enumerate(lines) if "http-request return" in line]
    assert lines[message].endswith("if !allowed_method !refused")  # the first refusal wins
    assert lines[mark].endswith("if !allowed_method !refused")
    assert "status 200 content-type application/grpc" in lines[answer]  # trailers-only gRPC
    assert 'hdr grpc-status "%[var(txn.grpc_code)]"' in lines[answer]
    assert lines[answer].endswith("if refused")
    frontend = lines.index("frontend kserve")
    assert message < mark < answer < lines.index("    default_backend triton", frontend)


def test_model_sync_methods_are_allowed_when_served(tmp_path) -> None:
    allowed = allowed_paths(render(tmp_path, model_sync="127.0.0.1:9200"))
    methods = model_sync_pb2.DESCRIPTOR.services_by_name["ModelSync"].methods
    assert {MODEL_SYNC + m.name for m in methods} <= allowed


def test_with_callers_every_kserve_method_needs_its_scope(tmp_path) -> None:
    callers, _ = Callers().with_new_token("ops", ["admin"])
    maps = CallerMaps.write(callers.with_certificate("cam", "camera-1", ["infer"]), tmp_path)
    assert maps.tokens.read_text() == f"{callers.callers[0].token_sha256} ,admin,\n"
    assert maps.certificates.read_text() == "camera-1 ,infer,\n"
    assert maps.tokens.stat().st_mode & 0o777 == 0o600
    text = render(tmp_path, callers=maps, admin_key="s3cret")
    lines = text.splitlines()
    kserve = {p.removeprefix(KSERVE) for p in allowed_paths(text) if p.startswith(KSERVE)}
    assert kserve == TRITON_METHODS  # admin methods reach Triton, for admin callers
    for scope in ("infer", "status", "admin"):
        (acl,) = [line for line in lines if line.startswith(f"    acl needs_{scope} path ")]
        needed = {m.removeprefix(KSERVE) for m in acl.split()[3:]}
        assert needed == set(service_methods(KSERVE, scope))
    (grant,) = [i for i, line in enumerate(lines) if "set-header" in line]
    (check,) = [
        i
        for i, line in enumerate(lines)
        if "!{ var(txn.scopes) -m sub ,admin, }" in line and "set-var(txn.grpc_code)" in line
    ]
    (answer,) = [i for i, line in enumerate(lines) if "http-request return" in line]
    strip = lines.index(f"    http-request del-header {ADMIN_KEY_HEADER}")
    # the key is added only once the caller is known as admin, and refusals are answered
    assert strip < check < answer < grant
    assert lines[grant].endswith(f"{ADMIN_KEY_HEADER} s3cret if needs_admin")


def test_an_admin_key_without_callers_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="caller file"):
        render(tmp_path, admin_key="s3cret")
