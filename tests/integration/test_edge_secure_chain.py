"""Every edge hop secured at once: a client calls the agent over mutual TLS with a token; the
agent escalates through a router gateway over mutual TLS with its own token (tritonclient, the
token as headers) and follows ModelSync there over the same TLS; nothing runs insecure but the
gateway's hop to the test's Triton."""

from pathlib import Path

import pytest

from edgecascade.cloud.common import certs
from edgecascade.cloud.common.auth import Callers
from edgecascade.cloud.common.launcher import wait_until
from edgecascade.cloud.registry.store import Registry
from edgecascade.edge.serving.security import client_transport
from edgecascade.edge.tools.process import CLIENT_CERT, EdgeProcess, development_security
from edgecascade.router.gateway.process import GatewayProcess
from edgecascade.v1 import cascade_pb2 as pb
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc
from tests.family_files import copy_family
from tests.helpers import classify, following_edge
from tests.integration.test_model_updates import new_edge_model


def status(edge: EdgeProcess) -> pb.GetStatusResponse:
    with edge.client.channel(edge.address) as channel:
        return pb_grpc.CascadeStub(channel).GetStatus(pb.GetStatusRequest(), timeout=10)


pytestmark = pytest.mark.integration


def test_agent_to_gateway_over_mutual_tls_with_tokens(
    fashion_manifest, triton, frames, tmp_path: Path
) -> None:
    folder = tmp_path / "pki"
    security = development_security(folder)
    gateway_cert = certs.issue(folder, "gateway")
    ca = folder / certs.CA_CERT
    callers, token = Callers().with_new_token("edge-1", ("infer", "status", "sync"))
    callers.save(tmp_path / "gateway-callers.json")
    (tmp_path / "edge-token").write_text(token + "\n")
    as_edge = {
        "ca": ca,
        "cert": folder / f"{CLIENT_CERT}.pem",
        "key": folder / f"{CLIENT_CERT}.key",
        "token_file": tmp_path / "edge-token",
    }
    build = copy_family(tmp_path / "build")
    registry = Registry(tmp_path / "registry")
    v1 = registry.publish("fashion", build).manifest
    with (
        GatewayProcess(
            [triton.grpc_url],
            tmp_path / "gateway.log",
            registry=registry.root,
            options=[
                *("--tls-cert", str(gateway_cert.cert), "--tls-key", str(gateway_cert.key)),
                *("--tls-ca", str(ca), "--require-client-cert"),
                *("--callers", str(tmp_path / "gateway-callers.json")),
            ],
            client=client_transport(**as_edge),
        ) as gateway,
        following_edge(
            gateway.url,
            gateway.url,
            tmp_path / "edge-artifacts",  # nothing built: v1 comes over ModelSync (TLS)
            tmp_path / "edge.log",
            "--threshold",
            "1",  # every frame escalates
            *("--cloud-ca", str(ca), "--cloud-cert", str(as_edge["cert"])),
            *("--cloud-key", str(as_edge["key"]), "--cloud-token-file", str(as_edge["token_file"])),
            security=security,
            cloud_insecure=False,
        ) as edge,
    ):
        s = status(edge)
        assert s.manifest_version == v1.version and list(s.insecure_hops) == []
        with edge.client.channel(edge.address) as channel:
            answer = classify(pb_grpc.CascadeStub(channel), frames[0])
        assert answer.tier == pb.CLOUD and not answer.degraded, answer.degraded_reason
        new_edge_model(build)
        v2 = registry.publish("fashion", build).manifest
        assert wait_until(lambda: status(edge).manifest_version == v2.version, 60)
    assert token not in (tmp_path / "edge.log").read_text()
