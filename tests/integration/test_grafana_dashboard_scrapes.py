"""Every metric and label the fleet dashboard (deploy/grafana/edgecascade-fleet.json) queries is
in a real scrape: a real agent's /metrics (it escalated and audited against the real Triton) for
the agent's queries, a real gateway's /metrics (HAProxy's, and its gRPC codes) for the gateway's."""

import time
import urllib.request
from pathlib import Path

import pytest

from edgecascade.cloud.common.ports import free_port
from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.cloud.triton.server import TritonServer
from edgecascade.edge.tools.samples import Frame
from edgecascade.router.gateway.process import GatewayProcess
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc
from tests.helpers import Agent, classify, start_agent
from tests.unit.test_grafana_dashboard import dashboard, exposed, unknown

pytestmark = pytest.mark.integration


def scrape(url: str) -> str:
    return urllib.request.urlopen(url, timeout=5).read().decode()


def test_the_agent_queries_read_a_real_agent_scrape(
    triton: TritonServer, frames: list[Frame], tmp_path: Path
) -> None:
    agent: Agent = start_agent(tmp_path, triton.grpc_url, "--audit-rate", "1")
    try:
        with PLAINTEXT.channel(agent.address) as channel:
            stub = pb_grpc.CascadeStub(channel)
            for frame in frames[:40]:
                classify(stub, frame)
        assert agent.metric("edgecascade_escalations_total"), "some of 40 images escalate"
        deadline = time.monotonic() + 10
        while not agent.metric("edgecascade_audited_total") and time.monotonic() < deadline:
            time.sleep(0.1)  # audits finish in the background
        series = exposed(scrape(agent.metrics_url))
    finally:
        agent.process.stop()
    assert "edgecascade_audit_agreement" in series
    assert unknown(dashboard(), series, gateway=False) == []


def test_the_gateway_queries_read_a_real_gateway_scrape(
    triton: TritonServer, tmp_path: Path
) -> None:
    port = free_port()
    with GatewayProcess([triton.grpc_url], tmp_path / "gateway.log", metrics_port=port):
        series = exposed(scrape(f"http://127.0.0.1:{port}/metrics"))
    assert unknown(dashboard(), series, gateway=True) == []
    assert "haproxy_backend_active_servers" in series
    assert "grpc_server_handled_total" in series  # its own ready check counted
