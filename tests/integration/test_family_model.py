"""One model, two tiers, one request: the real Triton serves the family model (`fashion`, the
edge agent's KServe inputs and outputs, answered by `fashion_cloud`), so the same unmodified
tritonclient.grpc and tritonclient.http code asks an edge agent, Triton and Triton through the
gateway with only the URL changed."""

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.ports import free_port
from edgecascade.cloud.common.preprocessing import decode_image, prepare_batch
from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.cloud.triton.repository import write_repository
from edgecascade.cloud.triton.server import TritonServer
from edgecascade.edge.tools.samples import Frame
from edgecascade.router.gateway.process import GatewayProcess
from tests.helpers import Agent, start_agent

pytestmark = pytest.mark.integration

MODEL = "fashion"
OUTPUTS = ("probabilities", "top1", "edge_confidence", "tier")
CORRUPT = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + b"\x00" * 5  # a truncated PNG


@pytest.fixture(scope="module")
def family_triton(fashion_manifest: Manifest, tmp_path_factory) -> Iterator[TritonServer]:
    """Triton on the repository `cloud serve` writes: fashion_cloud and the family model."""
    repository = tmp_path_factory.mktemp("family-repository")
    write_repository([fashion_manifest], repository)
    with TritonServer(repository, log_path=repository.parent / "triton.log") as server:
        yield server


@pytest.fixture(scope="module")
def edge_http_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def agent(family_triton: TritonServer, tmp_path_factory, edge_http_port: int) -> Iterator[Agent]:
    """Every input escalates (threshold 1.0): the agent answers with the cloud's model."""
    agent = start_agent(
        tmp_path_factory.mktemp("edge"),
        family_triton.grpc_url,
        "--http-port",
        str(edge_http_port),
        "--threshold",
        "1.0",
    )
    yield agent
    agent.process.stop()


@pytest.fixture(scope="module")
def gateway(family_triton: TritonServer, tmp_path_factory) -> Iterator[GatewayProcess]:
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    with GatewayProcess([family_triton.grpc_url], log, http_port=free_port()) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def grpc_urls(agent: Agent, family_triton: TritonServer, gateway: GatewayProcess) -> list[str]:
    return [agent.address, family_triton.grpc_url, gateway.url]


@pytest.fixture(scope="module")
def http_urls(
    family_triton: TritonServer, edge_http_port: int, agent: Agent, gateway: GatewayProcess
) -> list[str]:
    return [
        f"127.0.0.1:{edge_http_port}",
        family_triton.http_url,
        f"127.0.0.1:{gateway.http_port}",
    ]


# The request code a user writes once: nothing in it knows which tier it talks to.
def ask_grpc(url: str, images: list[bytes]) -> dict[str, np.ndarray]:
    client = PLAINTEXT.triton(url)
    tensor = grpcclient.InferInput("image", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_))
    result = client.infer(MODEL, [tensor])
    response = result.get_response()
    assert response.model_name == MODEL
    client.close()
    return {output.name: result.as_numpy(output.name) for output in response.outputs}


def ask_http(url: str, images: list[bytes], binary: bool = True) -> dict[str, np.ndarray]:
    """Encoded images go as binary data (JSON carries only UTF-8 strings); the outputs come
    back as binary data or as JSON."""
    client = PLAINTEXT.triton_http(url)
    tensor = httpclient.InferInput("image", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)
    wanted = [httpclient.InferRequestedOutput(name, binary_data=binary) for name in OUTPUTS]
    result = client.infer(MODEL, [tensor], outputs=wanted)
    assert result.get_response()["model_name"] == MODEL
    client.close()
    return {
        output["name"]: result.as_numpy(output["name"])
        for output in result.get_response()["outputs"]
    }


def text(elements: np.ndarray) -> list[str]:
    """BYTES elements: tritonclient gives bytes from binary data, str from JSON."""
    return [e.decode() if isinstance(e, bytes) else str(e) for e in elements.ravel()]


def same_answers(answers: list[dict[str, np.ndarray]], n: int, classes: int) -> None:
    """Every tier answered with the same outputs, dtypes and shapes, and the same classes and
    probabilities (the edge escalated everything to the same cloud model)."""
    first = answers[0]
    assert set(first) == set(OUTPUTS)
    shapes = {"probabilities": (n, classes), "top1": (n,), "edge_confidence": (n,), "tier": (n,)}
    for answer in answers:
        assert {k: (v.dtype, v.shape) for k, v in answer.items()} == {
            k: (v.dtype, shapes[k]) for k, v in first.items()
        }
        assert text(answer["tier"]) == ["cloud"] * n
        assert answer["top1"].tolist() == first["top1"].tolist()
        np.testing.assert_allclose(answer["probabilities"], first["probabilities"], atol=1e-6)
    assert first["probabilities"].dtype == np.float32 and first["top1"].dtype == np.int32


def test_the_same_grpc_request_code_on_edge_triton_and_gateway(
    grpc_urls: list[str], frames: list[Frame], fashion_manifest: Manifest
) -> None:
    images = [f.encoded for f in frames[:6]]
    answers = [ask_grpc(url, images) for url in grpc_urls]
    same_answers(answers, 6, len(fashion_manifest.labels))
    assert np.isnan(answers[1]["edge_confidence"]).all()  # Triton: no edge model ran
    tensors = []
    for url in grpc_urls:
        client = PLAINTEXT.triton(url)
        metadata = client.get_model_metadata(MODEL, as_json=True)
        client.close()
        assert metadata["versions"] == [str(fashion_manifest.version)]
        tensors.append(
            {
                (t["name"], t["datatype"], tuple(t["shape"]))
                for t in metadata["inputs"] + metadata["outputs"]
            }
        )
    assert tensors[0] == tensors[1] == tensors[2], "the edge's model metadata, on every tier"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_the_same_http_request_code_on_edge_and_triton(
    http_urls: list[str],
    family_triton: TritonServer,
    frames: list[Frame],
    fashion_manifest: Manifest,
    binary: bool,
) -> None:
    images = [f.encoded for f in frames[6:10]]
    answers = [ask_http(url, images, binary) for url in http_urls]
    same_answers(answers, 4, len(fashion_manifest.labels))
    over_grpc = ask_grpc(family_triton.grpc_url, images)
    np.testing.assert_allclose(answers[1]["probabilities"], over_grpc["probabilities"], atol=1e-7)


def test_the_cloud_answer_is_the_cloud_model_on_the_prepared_image(
    family_triton: TritonServer, frames: list[Frame], fashion_manifest: Manifest
) -> None:
    cloud = fashion_manifest.cloud
    images = [f.encoded for f in frames[10:18]]
    prepared = prepare_batch([decode_image(i) for i in images], cloud.preprocessing)
    client = PLAINTEXT.triton(family_triton.grpc_url)
    tensor = grpcclient.InferInput("image", list(prepared.shape), "UINT8")
    tensor.set_data_from_numpy(prepared)
    logits = client.infer(cloud.name, [tensor], model_version=str(cloud.version)).as_numpy("logits")
    pixels = grpcclient.InferInput("pixels", list(prepared.shape), "UINT8")
    pixels.set_data_from_numpy(prepared)
    from_pixels = client.infer(MODEL, [pixels]).as_numpy("probabilities")
    client.close()
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    answer = ask_grpc(family_triton.grpc_url, images)
    np.testing.assert_allclose(answer["probabilities"], expected, rtol=1e-5, atol=1e-7)
    assert answer["top1"].tolist() == logits.argmax(1).tolist()
    np.testing.assert_allclose(from_pixels, answer["probabilities"], atol=1e-7)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([CORRUPT], "corrupt PNG"),
        ([b"not an image"], "cannot decode 12 bytes as an image"),
        ([b""], "empty image"),
    ],
    ids=["truncated-png", "not-an-image", "empty"],
)
def test_a_bad_image_is_invalid_argument_and_the_next_request_is_answered(
    grpc_urls: list[str], http_urls: list[str], frames: list[Frame], bad: list[bytes], message: str
) -> None:
    for url in grpc_urls:
        with pytest.raises(InferenceServerException) as refused:
            ask_grpc(url, [frames[0].encoded, *bad])
        assert refused.value.status() == "StatusCode.INVALID_ARGUMENT", url
        assert message in refused.value.message(), url
        assert text(ask_grpc(url, [frames[1].encoded])["tier"]) == ["cloud"]
    for url in http_urls:
        with pytest.raises(InferenceServerException) as refused:
            ask_http(url, bad)
        assert refused.value.status() == "400" and message in refused.value.message(), url
        assert text(ask_http(url, [frames[1].encoded])["tier"]) == ["cloud"]


def test_too_many_images_or_no_input_are_refused_with_the_reason(
    family_triton: TritonServer, frames: list[Frame]
) -> None:
    client = PLAINTEXT.triton(family_triton.grpc_url)
    calls: list[tuple[Callable[[], Any], str]] = [
        (lambda: ask_grpc(family_triton.grpc_url, [frames[0].encoded] * 65), "send 1 to 64"),
        (lambda: client.infer(MODEL, []), "send exactly one of 'image'"),
    ]
    for call, message in calls:
        with pytest.raises(InferenceServerException) as refused:
            call()
        assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert message in refused.value.message()
    client.close()
