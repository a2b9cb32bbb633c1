"""Model versions kept in sync: publish while a stream runs, corrupted artifacts, and a
manifest naming a cloud version Triton lacks. Real Triton (explicit model control), a real
gateway serving ModelSync, a real edge agent following it."""

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import grpc
import pytest

from edgecascade.cloud.common.launcher import edgecascade_command, wait_until
from edgecascade.cloud.common.manifest import Manifest, sha256_file
from edgecascade.cloud.common.ports import free_port
from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.cloud.registry.rollout import CloudTarget, roll_out
from edgecascade.cloud.registry.store import Registry
from edgecascade.cloud.triton.server import TritonServer
from edgecascade.edge.tools.samples import labelled_frames
from edgecascade.router.gateway.process import GatewayProcess
from edgecascade.router.policy.policies import policy_from_manifest
from edgecascade.v1 import cascade_pb2 as pb
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc
from tests.family_files import copy_family
from tests.helpers import following_edge, metric

pytestmark = pytest.mark.integration


def rehash(folder: Path) -> None:
    manifest = Manifest.load(folder / "manifest.json")
    for spec in (manifest.edge, manifest.cloud):
        spec.files = {rel: sha256_file(folder / rel) for rel in spec.files}
    manifest.save(folder / "manifest.json")


def new_edge_model(folder: Path) -> None:
    """A different edge model: the FP32 reference takes the INT8 model's place."""
    for suffix in ("xml", "bin"):
        shutil.copyfile(folder / f"edge/fp32/model.{suffix}", folder / f"edge/model.{suffix}")
    rehash(folder)


def new_cloud_model(folder: Path) -> None:
    """A different cloud model file (same graph, one more metadata entry)."""
    import onnx

    model = onnx.load(folder / "cloud/model.onnx")
    onnx.helper.set_model_props(model, {"retrained": str(time.time())})
    onnx.save(model, folder / "cloud/model.onnx")
    rehash(folder)


class Stream:
    """Classify calls in a loop on a thread, recording every answer's pair and any error."""

    def __init__(self, address: str, frames):
        self.address, self.frames = address, frames
        self.pairs: list[tuple[str, str, int]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with PLAINTEXT.channel(self.address) as channel:
            stub = pb_grpc.CascadeStub(channel)
            i = 0
            while not self._stop.is_set():
                frame = self.frames[i % len(self.frames)]
                try:
                    r = stub.Classify(pb.ClassifyRequest(encoded_image=frame.encoded), timeout=10)
                    self.pairs.append((r.versions.edge, r.versions.cloud, r.tier))
                except grpc.RpcError as e:
                    self.errors.append(f"{e.code()}: {e.details()}")
                i += 1

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def status(address: str) -> pb.GetStatusResponse:
    with PLAINTEXT.channel(address) as channel:
        return pb_grpc.CascadeStub(channel).GetStatus(pb.GetStatusRequest(), timeout=5)


def cli_status(*addresses: str) -> list[dict]:
    """`edgecascade status --json` as a user runs it."""
    agents = [arg for address in addresses for arg in ("--agent", address)]
    run = subprocess.run(
        edgecascade_command("status", *agents, "--json", "--insecure"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    rows = json.loads(run.stdout)
    # exit 1 when an agent is unreachable or not serving
    assert run.returncode == int(any(row["health"] != "SERVING" for row in rows)), run.stderr
    return rows


@contextmanager
def serving_v1(
    tmp_path: Path, registry: Registry, build: Path
) -> Iterator[tuple[Path, TritonServer, GatewayProcess, Manifest]]:
    """Triton (explicit model control) behind a gateway serving `registry` over ModelSync,
    with `build` published and rolled out as the family's first version."""
    repository = tmp_path / "repository"
    repository.mkdir()
    with (
        TritonServer(
            repository, model_control_mode="explicit", log_path=tmp_path / "triton.log"
        ) as triton,
        GatewayProcess(
            [triton.grpc_url], tmp_path / "gateway.log", registry=registry.root
        ) as gateway,
    ):
        registry.publish("fashion", build, activate=False)
        roll_out(registry, [CloudTarget(triton.control, repository)], "fashion")
        yield repository, triton, gateway, registry.get("fashion")


class UncheckedRegistry(Registry):
    """Activates without re-hashing blobs: corruption that happens after activation."""

    def verify_blob(self, sha256: str) -> Path:
        return self.blob_path(sha256)


def test_versions_switch_at_one_point_and_bad_updates_never_serve(fashion_manifest, tmp_path):
    build = copy_family(tmp_path / "build")
    registry = Registry(tmp_path / "registry")
    frames = labelled_frames("fashion", 200)
    metrics = f"http://127.0.0.1:{(metrics_port := free_port())}/metrics"
    with serving_v1(tmp_path, registry, build) as (repository, triton, gateway, v1):
        with following_edge(
            gateway.url,
            gateway.url,
            tmp_path / "edge-artifacts-root",
            tmp_path / "edge.log",
            "--metrics-port",
            str(metrics_port),
        ) as edge:
            assert wait_until(lambda: status(edge.address).manifest_version == v1.version, 30)
            pair1 = (v1.edge.key, v1.cloud.key)

            # 1. A new pair (edge and cloud retrained) published while a stream runs.
            new_edge_model(build)
            new_cloud_model(build)
            registry.publish("fashion", build, activate=False)
            with ExitStack() as clients:  # three clients keep the agent busy during the swap
                streams = [clients.enter_context(Stream(edge.address, frames)) for _ in range(3)]
                assert wait_until(lambda: all(len(s.pairs) > 30 for s in streams), 30)
                roll_out(registry, [CloudTarget(triton.control, repository)], "fashion")
                v2 = registry.get("fashion")
                pair2 = (v2.edge.key, v2.cloud.key)
                assert pair2[0] != pair1[0] and pair2[1] != pair1[1]
                assert wait_until(lambda: all(s.pairs[-1][:2] == pair2 for s in streams), 30)
                settled = [len(s.pairs) for s in streams]
                assert wait_until(
                    lambda: all(len(s.pairs) > n + 30 for s, n in zip(streams, settled)), 30
                )
            for stream in streams:
                assert stream.errors == []
                seen = [p[:2] for p in stream.pairs]
                switch = seen.index(pair2)
                assert set(seen[:switch]) == {pair1} and set(seen[switch:]) == {pair2}
            after = [p for s in streams for p in s.pairs if p[:2] == pair2]
            assert any(p[2] == pb.CLOUD for p in after), "the new pair escalates to cloud v2"
            # Triton's per-version counter follows the swap: each answer counts for its pair's
            # version (issue 15: after an update, nv_inference_count{version="1"} kept counting)
            for version, pair in ((v1.version, pair1), (v2.version, pair2)):
                count = metric(metrics, "nv_inference_count", model="fashion", version=str(version))
                assert count == sum(p[:2] == pair for s in streams for p in s.pairs), version
            assert status(edge.address).previous_version == v1.version
            closed = f"closed the deployment of v{v1.version} "  # once its last request was done
            assert wait_until(lambda: closed in edge.log_path.read_text(), 10), edge.log_tail()
            fleet = cli_status(edge.address, "127.0.0.1:1")
            assert fleet[0]["health"] == "SERVING" and fleet[0]["family"] == "fashion"
            assert (fleet[0]["manifest_version"], fleet[0]["previous_version"]) == (2, 1)
            assert (fleet[0]["edge"], fleet[0]["cloud"]) == pair2
            assert fleet[0]["cloud_latency_ms"]["p95"] > 0 and fleet[0]["breaker"] == "closed"
            policy = policy_from_manifest(v2.policy)
            assert fleet[0]["policy"] == f"{policy.label} < {policy.threshold:.4f}"
            assert fleet[1] == {
                "address": "127.0.0.1:1",
                "health": "UNREACHABLE",
                "error": "UNAVAILABLE",
            }

            # 2. A corrupted artifact: rejected, v2 keeps serving.
            (build / "edge/model.bin").write_bytes((build / "edge/model.bin").read_bytes()[::-1])
            rehash(build)
            v3 = registry.publish("fashion", build, activate=False).manifest
            blob = registry.blob_path(v3.edge.files["edge/model.bin"])
            blob.chmod(0o644)
            blob.write_bytes(b"bit rot" + blob.read_bytes()[7:])
            UncheckedRegistry(registry.root).activate("fashion", v3.version)
            assert wait_until(lambda: status(edge.address).update_error != "", 30)
            s = status(edge.address)
            assert s.manifest_version == v2.version and (s.versions.edge, s.versions.cloud) == pair2
            assert f"v{v3.version}" in s.update_error

            # 3. A manifest whose cloud version Triton lacks (published, never rolled out).
            shutil.rmtree(build)
            copy_family(build)
            new_cloud_model(build)
            v4 = registry.publish("fashion", build).manifest
            assert v4.cloud.version not in triton.control.ready_versions(v4.cloud.name)
            assert wait_until(lambda: status(edge.address).manifest_version == v4.version, 30)
            assert status(edge.address).version_mismatch
            with PLAINTEXT.channel(edge.address) as channel:
                stub = pb_grpc.CascadeStub(channel)
                answers = [
                    stub.Classify(pb.ClassifyRequest(encoded_image=f.encoded), timeout=10)
                    for f in frames[:100]
                ]
    assert all(a.versions.cloud == v4.cloud.key for a in answers)
    assert all(a.tier == pb.EDGE for a in answers)
    escalated = [a for a in answers if a.degraded]
    assert escalated and {a.degraded_reason for a in escalated} == {"version-mismatch"}
    assert {a.degraded_reason_code for a in escalated} == {pb.VERSION_MISMATCH}
