"""An adapted model reaches a following agent through the registry with no failed request: a
real Triton, a real gateway serving the registry over ModelSync, a real agent following it, and
clients sending Classify all along while `edgecascade models adapt` (a real process) distils the
examples an edge uploaded (answered by the real cloud ONNX) and publishes v2, signed."""

import json
import subprocess
from contextlib import ExitStack
from pathlib import Path

import pytest

from edgecascade.cloud.common.launcher import edgecascade_command, wait_until
from edgecascade.cloud.registry.store import Registry
from edgecascade.edge.tools.samples import labelled_frames
from edgecascade.router.gateway.process import GatewayProcess
from edgecascade.v1 import cascade_pb2 as pb
from tests.helpers import following_edge
from tests.integration.test_model_updates import Stream, status
from tests.integration.test_models_adapt import answered, registry_with

pytestmark = pytest.mark.integration
__all__ = ["answered"]  # the fixture of pixelated images and the cloud's answers
EPOCHS = "3"  # as test_models_adapt, whose good examples pass the gate (6 did not)


def models_adapt(root: Path, report: Path) -> dict:
    """`edgecascade models adapt` on the registry's uploads, as an operator runs it."""
    done = subprocess.run(
        edgecascade_command(
            "models", "adapt", "--family", "fashion", "--registry", str(root),
            "--epochs", EPOCHS, "--report", str(report),
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out: dict = json.loads(report.read_text())
    return out


def test_an_adapted_model_reaches_a_following_agent_with_no_failed_request(
    triton, answered, tmp_path: Path
) -> None:
    root = registry_with(tmp_path, *answered)
    registry = Registry(root)
    v1 = registry.get("fashion")
    frames = labelled_frames("fashion", 200)
    with (
        GatewayProcess([triton.grpc_url], tmp_path / "gateway.log", registry=root) as gateway,
        following_edge(
            triton.grpc_url, gateway.url, tmp_path / "edge-artifacts", tmp_path / "edge.log"
        ) as edge,
    ):
        assert wait_until(lambda: status(edge.address).manifest_version == v1.version, 30)
        with ExitStack() as clients:  # two clients keep sending through the round and swap
            streams = [clients.enter_context(Stream(edge.address, frames)) for _ in range(2)]
            assert wait_until(lambda: all(len(s.pairs) > 20 for s in streams), 30)
            out = models_adapt(root, tmp_path / "adapt.json")
            assert out["gate"]["passed"] and out["published_version"] == 2, out["gate"]
            v2 = registry.get("fashion")
            assert v2.edge.key != v1.edge.key and v2.cloud == v1.cloud
            assert wait_until(lambda: all(s.pairs[-1][0] == v2.edge.key for s in streams), 60)
            settled = [len(s.pairs) for s in streams]
            assert wait_until(
                lambda: all(len(s.pairs) > n + 20 for s, n in zip(streams, settled)), 30
            )
        for stream in streams:
            assert stream.errors == []
            edges = [pair[0] for pair in stream.pairs]
            switch = edges.index(v2.edge.key)
            assert set(edges[:switch]) == {v1.edge.key} and set(edges[switch:]) == {v2.edge.key}
            assert {pair[1] for pair in stream.pairs} == {v1.cloud.key}
            assert any(pair[2] == pb.CLOUD for pair in stream.pairs[switch:])
        served = status(edge.address)
        assert (served.manifest_version, served.previous_version) == (2, 1)
        assert served.threshold == pytest.approx(v2.policy.threshold, rel=1e-6)
