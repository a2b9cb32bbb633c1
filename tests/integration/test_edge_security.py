"""The edge agent on a network it does not trust: a real agent process with mutual TLS and a
caller file, Triton behind it, real handshakes over loopback with generated certificates. The
right caller is answered; every wrong one is refused with its own status while the agent keeps
serving everyone else. An --insecure agent says so in GetStatus, its metrics and its log."""

import json
import secrets
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgecascade.cloud.common import certs
from edgecascade.cloud.common.auth import Callers
from edgecascade.cloud.common.launcher import edgecascade_command, wait_until
from edgecascade.cloud.common.ports import free_port
from edgecascade.cloud.common.transport import PLAINTEXT, Tls, Transport
from edgecascade.edge.serving.security import client_transport
from edgecascade.edge.tools.process import (
    AGENT_CERT,
    CLIENT_CERT,
    TOKEN,
    EdgeProcess,
    development_security,
)
from edgecascade.v1 import cascade_pb2 as pb
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc
from tests.helpers import classify, metric

pytestmark = pytest.mark.integration


def refused(transport: Transport, address: str, frame) -> grpc.RpcError:
    with transport.channel(address) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            classify(pb_grpc.CascadeStub(channel), frame)
    return caught.value


def test_mutual_tls_and_callers_on_the_agent(fashion_manifest, triton, frames, tmp_path: Path):
    folder = tmp_path / "certs"
    security = development_security(folder)
    # a second caller, allowed to read the status only
    callers, status_token = Callers.load(folder / "callers.json").with_new_token(
        "watcher", ("status",)
    )
    callers.save(folder / "callers.json")
    (folder / "watcher-token").write_text(status_token)
    other = tmp_path / "other-ca"
    certs.init(other, name="someone else's CA")
    certs.issue(other, "stranger", kind="client")
    ca = folder / certs.CA_CERT
    client_cert, client_key = folder / f"{CLIENT_CERT}.pem", folder / f"{CLIENT_CERT}.key"
    metrics_port = free_port()
    log = tmp_path / "edge.log"
    frame = frames[0]
    with EdgeProcess(
        "fashion",
        triton.grpc_url,
        log,
        "--metrics-port",
        str(metrics_port),
        "--threshold",
        "1",  # every frame escalates: the agent's own Triton client works too
        security=security,
    ) as agent:
        right = security.client()
        with right.channel(agent.address) as channel:
            answer = classify(pb_grpc.CascadeStub(channel), frame)
        assert answer.tier == pb.CLOUD and not answer.degraded

        # No client certificate, one from another CA, plaintext: refused at the handshake.
        no_cert = client_transport(ca=ca, token_file=folder / TOKEN)
        stranger = client_transport(
            ca=ca,
            cert=other / "stranger.pem",
            key=other / "stranger.key",
            token_file=folder / TOKEN,
        )
        for wrong in (no_cert, stranger, PLAINTEXT):
            assert refused(wrong, agent.address, frame).code() == grpc.StatusCode.UNAVAILABLE

        # A token without the `infer` scope: PERMISSION_DENIED, saying which scope is needed;
        # the same token reads the status.
        watcher = client_transport(
            ca=ca, cert=client_cert, key=client_key, token_file=folder / "watcher-token"
        )
        denied = refused(watcher, agent.address, frame)
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "needs scope 'infer'" in denied.details() and "'watcher'" in denied.details()
        with watcher.channel(agent.address) as channel:
            status = pb_grpc.CascadeStub(channel).GetStatus(pb.GetStatusRequest(), timeout=10)
        assert list(status.insecure_hops) == ["cloud"]  # the test's Triton is plaintext

        # A token no one issued: UNAUTHENTICATED, telling how to get one.
        unknown = Transport(
            tls=Tls(ca=ca, cert=client_cert, key=client_key),
            metadata=(("authorization", f"Bearer {secrets.token_urlsafe(32)}"),),
        )
        unauthenticated = refused(unknown, agent.address, frame)
        assert unauthenticated.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "not known to this server" in unauthenticated.details()

        # Health stays open to probes (a client certificate, no token).
        with client_transport(ca=ca, cert=client_cert, key=client_key).channel(
            agent.address
        ) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
        assert health.status == health_pb2.HealthCheckResponse.SERVING

        # A renewed certificate is used for new connections, without a restart.
        time.sleep(0.01)  # a new mtime
        certs.issue(folder, AGENT_CERT)
        with security.client().channel(agent.address) as channel:
            assert classify(pb_grpc.CascadeStub(channel), frame).top_k
        assert wait_until(lambda: "TLS certificate" in log.read_text(), 10)
        assert "reloaded" in log.read_text()

        # `edgecascade status` as an operator runs it, with the status-only token.
        done = subprocess.run(
            edgecascade_command(
                "status", "--agent", agent.address, "--json", "--ca", str(ca),
                "--cert", str(client_cert), "--key", str(client_key),
                "--token-file", str(folder / "watcher-token"),
            ),
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        [row] = json.loads(done.stdout)
        assert row["health"] == "SERVING" and row["insecure_hops"] == ["cloud"]

        # Still serving the right caller after every refusal.
        with right.channel(agent.address) as channel:
            assert classify(pb_grpc.CascadeStub(channel), frame).top_k
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        assert metric(url, "edgecascade_insecure", hop="agent") == 0
        assert metric(url, "edgecascade_insecure", hop="cloud") == 1
    text = log.read_text()
    assert "mutual TLS, callers from" in text
    for token in (status_token, (folder / TOKEN).read_text().strip()):
        assert token not in text  # no secret in any log line


def test_an_insecure_agent_says_so(fashion_manifest, tmp_path: Path):
    metrics_port = free_port()
    log = tmp_path / "edge.log"
    with EdgeProcess("fashion", None, log, "--metrics-port", str(metrics_port)) as agent:
        with PLAINTEXT.channel(agent.address) as channel:
            status = pb_grpc.CascadeStub(channel).GetStatus(pb.GetStatusRequest(), timeout=10)
        assert list(status.insecure_hops) == ["agent"]  # no cloud: no cloud hop
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        assert metric(url, "edgecascade_insecure", hop="agent") == 1
        assert metric(url, "edgecascade_insecure", hop="cloud") == 0
    warnings = [line for line in log.read_text().splitlines() if " WARNING " in line]
    assert any("INSECURE: the agent's port serves plaintext (--insecure)" in w for w in warnings)
