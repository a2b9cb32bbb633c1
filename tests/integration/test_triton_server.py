import os
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import openvino as ov
import pytest
import tritonclient.grpc as grpcclient

from edgecascade.cloud.common.manifest import INPUT_NAME, OUTPUT_NAME, Manifest
from edgecascade.cloud.common.paths import family_dir
from edgecascade.cloud.common.ports import port_is_free
from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.cloud.triton.server import TritonServer, TritonServerError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def local_model(fashion_manifest: Manifest) -> ov.CompiledModel:
    """The same ONNX compiled locally, f32, as the reference."""
    (onnx,) = [rel for rel in fashion_manifest.cloud.files if rel.endswith(".onnx")]
    onnx_path = family_dir("fashion") / onnx
    return ov.Core().compile_model(str(onnx_path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def images(manifest: Manifest, n: int, seed: int = 0) -> np.ndarray:
    shape = [n, *manifest.cloud.input_shape]
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def infer_input(batch: np.ndarray) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(INPUT_NAME, list(batch.shape), "UINT8")
    tensor.set_data_from_numpy(batch)
    return tensor


def test_logits_match_local_openvino(
    triton: TritonServer, fashion_manifest: Manifest, local_model: ov.CompiledModel
) -> None:
    manifest = fashion_manifest
    batch = images(manifest, 5)
    with PLAINTEXT.triton(triton.grpc_url) as client:
        result = client.infer(
            manifest.cloud.name, [infer_input(batch)], model_version=str(manifest.cloud.version)
        )
    logits = result.as_numpy(OUTPUT_NAME)
    assert logits.shape == (5, len(manifest.labels)) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, local_model(batch)[0], rtol=1e-4, atol=1e-4)


def test_classification_uses_the_label_file(
    triton: TritonServer, fashion_manifest: Manifest, local_model: ov.CompiledModel
) -> None:
    manifest = fashion_manifest
    batch = images(manifest, 1, seed=1)
    output = grpcclient.InferRequestedOutput(OUTPUT_NAME, class_count=1)
    with PLAINTEXT.triton(triton.grpc_url) as client:
        result = client.infer(manifest.cloud.name, [infer_input(batch)], outputs=[output])
    _, index, label = result.as_numpy(OUTPUT_NAME)[0][0].decode().split(":")
    expected = int(local_model(batch)[0][0].argmax())
    assert (int(index), label) == (expected, manifest.labels[expected])


def test_concurrent_requests_are_batched_and_split_back(
    triton: TritonServer, fashion_manifest: Manifest, local_model: ov.CompiledModel
) -> None:
    manifest = fashion_manifest
    name = manifest.cloud.name
    batches = [images(manifest, 1 + i % 4, seed=10 + i) for i in range(96)]
    with PLAINTEXT.triton(triton.grpc_url) as client:
        before = client.get_inference_statistics(name).model_stats[0]
        futures: list[Future] = []
        for batch in batches:
            future: Future = Future()
            futures.append(future)
            client.async_infer(
                name,
                [infer_input(batch)],
                callback=lambda result, error, f=future: (
                    f.set_exception(error) if error else f.set_result(result)
                ),
            )
        results = [f.result(timeout=60) for f in futures]
        after = client.get_inference_statistics(name).model_stats[0]

    for batch, result in zip(batches, results):
        np.testing.assert_allclose(
            result.as_numpy(OUTPUT_NAME), local_model(batch)[0], rtol=1e-4, atol=1e-4
        )
    requests = after.inference_stats.success.count - before.inference_stats.success.count
    executions = after.execution_count - before.execution_count
    assert requests == len(batches)
    assert executions < requests, "the dynamic batcher merged no requests"


def test_missing_version_fails_clearly(triton: TritonServer, fashion_manifest: Manifest) -> None:
    manifest = fashion_manifest
    request = [infer_input(images(manifest, 1))]
    with (
        PLAINTEXT.triton(triton.grpc_url) as client,
        pytest.raises(grpcclient.InferenceServerException, match="version 999 is not found"),
    ):
        client.infer(manifest.cloud.name, request, model_version="999")


def test_stop_frees_ports_and_keeps_the_log(fashion_repository: Path, tmp_path: Path) -> None:
    server = TritonServer(fashion_repository, log_path=tmp_path / "triton.log").start()
    pid, port = server.pid, server.grpc_port
    assert pid is not None and not port_is_free(port)
    with PLAINTEXT.triton(server.grpc_url) as client:
        assert client.is_server_ready()

    server.stop()
    server.stop()  # idempotent
    assert not server.is_running() and server.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert port_is_free(port)
    assert "Started GRPCInferenceService" in server.log_path.read_text()


def test_failed_start_raises_with_the_log_tail(tmp_path: Path) -> None:
    broken = tmp_path / "repo" / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "config.pbtxt").write_text('backend: "no_such_backend"\nmax_batch_size: 1\n')
    server = TritonServer(tmp_path / "repo", log_path=tmp_path / "triton.log")
    with pytest.raises(TritonServerError, match="no_such_backend"):
        server.start(timeout_s=60)
    assert not server.is_running()
