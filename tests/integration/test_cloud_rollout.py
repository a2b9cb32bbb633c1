"""Cloud roll-outs on a real Triton in explicit model-control mode."""

import os
import signal
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
from onnx import numpy_helper
from typer.testing import CliRunner, Result

from edgecascade.cloud.common.manifest import INPUT_NAME, OUTPUT_NAME, Manifest, sha256_file
from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.cloud.registry.rollout import CloudTarget, roll_out
from edgecascade.cloud.registry.store import Registry
from edgecascade.cloud.triton.control import TritonControlError
from edgecascade.cloud.triton.repository import read_config
from edgecascade.cloud.triton.server import TritonServer
from edgecascade.edge.cli import app
from tests.family_files import copy_family

pytestmark = pytest.mark.integration
ONNX = "cloud/model.onnx"
IMAGES = np.random.default_rng(0).integers(0, 256, [4, 28, 28, 1], dtype=np.uint8)


def retrain(folder: Path, bias: float | None) -> None:
    """Retrain the cloud model in `folder`: `bias` more on class 0's logit (None: garbage)."""
    if bias is None:
        (folder / ONNX).write_bytes(b"not an ONNX model")
    else:
        model = onnx.load(folder / ONNX)
        last_gemm = [node for node in model.graph.node if node.op_type == "Gemm"][-1]
        (init,) = [i for i in model.graph.initializer if i.name == last_gemm.input[2]]
        values = numpy_helper.to_array(init).copy()
        values[0] += bias
        init.CopyFrom(numpy_helper.from_array(values, init.name))
        onnx.save(model, folder / ONNX)
    manifest = Manifest.load(folder / "manifest.json")
    manifest.cloud.files[ONNX] = sha256_file(folder / ONNX)
    manifest.save(folder / "manifest.json")


def infer(url: str, version: int) -> np.ndarray:
    tensor = grpcclient.InferInput(INPUT_NAME, list(IMAGES.shape), "UINT8")
    tensor.set_data_from_numpy(IMAGES)
    with PLAINTEXT.triton(url) as client:
        result = client.infer("fashion_cloud", [tensor], model_version=str(version))
    return result.as_numpy(OUTPUT_NAME)


class WatchedRegistry(Registry):
    """The real registry; records what Triton serves at the moment the pointer moves."""

    triton: TritonServer
    seen_at_activation: dict[int, tuple[list[int], np.ndarray | None]]

    def activate(self, family: str, version: int) -> Manifest:
        cloud = self.get(family, version).cloud.version
        ready = self.triton.control.ready_versions("fashion_cloud")
        logits = infer(self.triton.grpc_url, cloud) if cloud in ready else None
        self.seen_at_activation[version] = (ready, logits)
        return super().activate(family, version)


def test_cloud_version_is_served_before_it_becomes_current_then_old_ones_unload(
    fashion_manifest: Manifest, tmp_path: Path
) -> None:
    build = copy_family(tmp_path / "build")
    registry = WatchedRegistry(tmp_path / "registry")
    registry.seen_at_activation = {}
    repository = tmp_path / "triton"
    repository.mkdir()
    with TritonServer(
        repository, model_control_mode="explicit", log_path=tmp_path / "triton.log"
    ) as triton:
        registry.triton = triton
        registry.publish("fashion", build, activate=False)
        first = roll_out(registry, [CloudTarget(triton.control, repository)], "fashion")
        assert (first.serving, registry.current_version("fashion")) == ({triton.grpc_url: [1]}, 1)
        # the family model (the edge's KServe model, served by the cloud) follows each manifest
        assert triton.control.ready_versions("fashion") == [1]
        v1_logits = infer(triton.grpc_url, 1)

        # v2: requests pinned to v1 go on while v2 loads and becomes current.
        retrain(build, bias=1.0)
        registry.publish("fashion", build, activate=False)
        assert registry.current_version("fashion") == 1
        stop, answered, failures = threading.Event(), [0], []

        def pinned_to_v1() -> None:
            while not stop.is_set():
                try:
                    infer(triton.grpc_url, 1)
                    answered[0] += 1
                except grpcclient.InferenceServerException as exc:
                    failures.append(str(exc))

        client = threading.Thread(target=pinned_to_v1)
        client.start()
        try:
            second = roll_out(registry, [CloudTarget(triton.control, repository)], "fashion")
        finally:
            stop.set()
            client.join()
        assert failures == [] and answered[0] > 0
        ready, logits = registry.seen_at_activation[2]
        assert ready == [1, 2] and logits is not None  # v2 answered before current moved to 2
        np.testing.assert_allclose(logits[:, 0], v1_logits[:, 0] + 1.0, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(logits[:, 1:], v1_logits[:, 1:], rtol=1e-5, atol=1e-4)
        assert (second.manifest.version, second.manifest.cloud.version) == (2, 2)
        assert (second.serving[triton.grpc_url], second.unloaded) == ([1, 2], [])  # v1: rollback
        assert 0 < second.ready_s < 60
        assert triton.control.ready_versions("fashion") == [1, 2]

        # v3 (class 0 +3 in all): keep=2 keeps the cloud versions of v3 and v2; v1 goes.
        retrain(build, bias=2.0)
        registry.publish("fashion", build, activate=False)
        third = roll_out(registry, [CloudTarget(triton.control, repository)], "fashion")
        assert (third.serving[triton.grpc_url], third.unloaded) == ([2, 3], [1])
        assert registry.seen_at_activation[3][0] == [1, 2, 3]
        assert not (repository / "fashion_cloud" / "1").exists()
        assert triton.control.ready_versions("fashion") == [2, 3]
        assert not (repository / "fashion" / "1").exists()
        config = read_config(repository / "fashion_cloud")
        assert list(config.version_policy.specific.versions) == [2, 3]
        with pytest.raises(grpcclient.InferenceServerException, match="version 1"):
            infer(triton.grpc_url, 1)

        # v4 does not load: the pointer stays on v3, Triton and the repository are unchanged.
        retrain(build, bias=None)
        registry.publish("fashion", build, activate=False)
        with pytest.raises(TritonControlError, match="could not load fashion_cloud"):
            roll_out(registry, [CloudTarget(triton.control, repository)], "fashion")
        assert 4 not in registry.seen_at_activation and registry.current_version("fashion") == 3
        assert triton.control.ready_versions("fashion_cloud") == [2, 3]
        assert not (repository / "fashion_cloud" / "4").exists()
        assert not (repository / "fashion" / "4").exists()
        assert triton.control.ready_versions("fashion") == [2, 3]
        assert list(read_config(repository / "fashion_cloud").version_policy.specific.versions) == [
            2,
            3,
        ]
        infer(triton.grpc_url, 3)

    # The repository left behind starts as it was served (--load-model in explicit mode).
    with TritonServer(
        repository, model_control_mode="explicit", load_models=["fashion_cloud"]
    ) as restarted:
        assert restarted.control.ready_versions("fashion_cloud") == [2, 3]
        np.testing.assert_allclose(
            infer(restarted.grpc_url, 3)[:, 0], v1_logits[:, 0] + 3.0, rtol=1e-5, atol=1e-4
        )


def publish(registry: Path, build: Path, *tritons: TritonServer) -> Result:
    """`edgecascade models publish` with one --triton/--repository pair per server."""
    targets = [
        arg for t in tritons for arg in ("--triton", t.grpc_url, "--repository", str(t.repository))
    ]
    args = ["models", "publish", "--family", "fashion", "--source", str(build)]
    return CliRunner().invoke(app, [*args, "--registry", str(registry), *targets])


def test_a_cluster_serves_the_new_version_everywhere_before_it_is_current_or_nowhere(
    fashion_manifest: Manifest, tmp_path: Path
) -> None:
    build = copy_family(tmp_path / "build")
    registry = tmp_path / "registry"
    servers = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        servers.append(
            TritonServer(
                tmp_path / name, model_control_mode="explicit", log_path=tmp_path / f"{name}.log"
            ).start()
        )
    a, b = servers
    try:
        done = publish(registry, build, a, b)
        assert done.exit_code == 0, done.output
        retrain(build, bias=1.0)
        done = publish(registry, build, a, b)
        assert done.exit_code == 0, done.output
        assert Registry(registry).current_version("fashion") == 2
        for triton in (a, b):
            assert triton.control.ready_versions("fashion_cloud") == [1, 2]
            assert f"Triton {triton.grpc_url} serves fashion_cloud versions [1, 2]" in done.output
        np.testing.assert_allclose(infer(a.grpc_url, 2), infer(b.grpc_url, 2), rtol=1e-6)

        # b is gone: v3 loads on a, fails on b, is taken out of a again and never current.
        os.killpg(b.pid, signal.SIGKILL)
        retrain(build, bias=2.0)
        done = publish(registry, build, a, b)
        assert done.exit_code != 0 and b.grpc_url in done.output
        assert Registry(registry).current_version("fashion") == 2
        assert a.control.ready_versions("fashion_cloud") == [1, 2]
        assert not (a.repository / "fashion_cloud" / "3").exists()
    finally:
        for triton in servers:
            triton.stop()
