"""The gateway's KServe v2 HTTP/REST face and its count of answers by gRPC status, on the real
HAProxy and the real Triton: unmodified tritonclient.http gets the same answers through the
gateway as from Triton's own HTTP port, and /metrics counts each call made, by method and code."""

import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.ports import free_port
from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.cloud.triton.server import TritonServer
from edgecascade.router.gateway.process import GatewayProcess
from tests.integration.test_triton_server import images, infer_input

pytestmark = pytest.mark.integration

KSERVE = "inference.GRPCInferenceService"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


class Gateway:
    def __init__(self, process: GatewayProcess, http_port: int, metrics_port: int) -> None:
        self.process, self.rest = process, f"127.0.0.1:{http_port}"
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"

    def handled(self) -> dict[tuple[str, str, str], float]:
        """grpc_server_handled_total by (service, method, code)."""
        text = urllib.request.urlopen(self.metrics_url, timeout=5).read().decode()
        (family,) = [
            f for f in text_string_to_metric_families(text) if f.name == "grpc_server_handled"
        ]
        return {
            (s.labels["grpc_service"], s.labels["grpc_method"], s.labels["grpc_code"]): s.value
            for s in family.samples
            if s.name == "grpc_server_handled_total"
        }


@pytest.fixture(scope="module")
def gateway(triton: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    folder = tmp_path_factory.mktemp("gateway-http")
    http_port, metrics_port = free_port(), free_port()
    with GatewayProcess(
        [triton.grpc_url],
        folder / "gateway.log",
        metrics_port=metrics_port,
        http_port=http_port,
        options=["--access-log"],
    ) as process:
        yield Gateway(process, http_port, metrics_port)


@pytest.fixture(scope="module")
def clients(gateway: Gateway, triton: TritonServer) -> Iterator[tuple[object, object]]:
    through, direct = PLAINTEXT.triton_http(gateway.rest), PLAINTEXT.triton_http(triton.http_url)
    yield through, direct
    through.close()
    direct.close()


def http_input(batch: np.ndarray, binary: bool) -> httpclient.InferInput:
    tensor = httpclient.InferInput("image", list(batch.shape), "UINT8")
    tensor.set_data_from_numpy(batch, binary_data=binary)
    return tensor


def test_tritonclient_http_gets_tritons_answers_through_the_gateway(
    clients, fashion_manifest: Manifest
) -> None:
    through, direct = clients
    name, version = fashion_manifest.cloud.name, str(fashion_manifest.cloud.version)
    batch = images(fashion_manifest, 3)
    answers = []
    for client in (through, direct):
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(name) and client.is_model_ready(name, version)
        assert not client.is_model_ready("no_such_model")
        assert "statistics" in client.get_server_metadata()["extensions"]
        with pytest.raises(InferenceServerException) as unknown:
            client.get_model_metadata("no_such_model")
        assert unknown.value.status() in ("400", "404") and "no_such_model" in str(unknown.value)
        logits = [
            client.infer(name, [http_input(batch, binary)]).as_numpy("logits")
            for binary in (True, False)
        ]
        answers.append((client.get_model_metadata(name), client.get_model_config(name), *logits))
    (metadata, config, binary, json), triton = answers
    assert metadata == triton[0] and config == triton[1]  # Triton's own answers, unchanged
    assert binary.shape == (3, len(fashion_manifest.labels))
    np.testing.assert_allclose(binary, triton[2], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(json, binary, rtol=1e-5, atol=1e-5)
    stats = through.get_inference_statistics(name)["model_stats"][0]
    assert stats["name"] == name and stats["inference_count"] >= 12  # these calls' 4 x 3 images


def test_model_control_is_refused_over_rest_as_over_grpc(clients) -> None:
    through, _ = clients
    for call in (
        through.get_model_repository_index,
        through.get_log_settings,
        through.get_trace_settings,
    ):
        with pytest.raises(InferenceServerException) as caught:
            call()
        assert caught.value.status() == "403", caught.value
        assert "not allowed through the gateway" in str(caught.value)


def test_a_rest_call_carries_its_trace_context_to_triton(
    gateway: Gateway, clients, fashion_manifest: Manifest
) -> None:
    through, _ = clients
    traceparent = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
    batch = images(fashion_manifest, 1)
    through.infer(
        fashion_manifest.cloud.name, [http_input(batch, True)], headers={"traceparent": traceparent}
    )
    log = Path(gateway.process.log_path or "")
    deadline = time.monotonic() + 5
    pattern = re.compile(rf"ModelInfer .*trace_id={TRACE_ID} span_id=00f067aa0ba902b7")
    while not pattern.search(log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pattern.search(log.read_text()), "HAProxy's line for the call names its trace"


def test_the_gateway_counts_each_answer_by_method_and_grpc_status(
    gateway: Gateway, clients, fashion_manifest: Manifest
) -> None:
    through, _ = clients
    name = fashion_manifest.cloud.name
    before = gateway.handled()
    with PLAINTEXT.triton(gateway.process.url) as client:
        for _ in range(3):
            client.infer(name, [infer_input(images(fashion_manifest, 2))])
        for call in (
            lambda: client.get_model_metadata("no_such_model"),  # Triton's answer
            lambda: client.get_model_metadata("no_such_model"),
            lambda: client.unload_model(name),  # the gateway's own answer
        ):
            with pytest.raises(InferenceServerException):
                call()
    through.infer(name, [http_input(images(fashion_manifest, 1), True)])  # REST goes as gRPC
    with PLAINTEXT.channel(gateway.process.url) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            channel.unary_unary("/no.such.Service/Scan")(b"", timeout=5)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    after = gateway.handled()
    delta = {key: after[key] - before.get(key, 0.0) for key in after}
    assert {key: n for key, n in delta.items() if n} == {
        (KSERVE, "ModelInfer", "OK"): 4,
        (KSERVE, "ModelMetadata", "NOT_FOUND"): 2,
        (KSERVE, "RepositoryModelUnload", "PERMISSION_DENIED"): 1,
        ("other", "other", "PERMISSION_DENIED"): 1,
    }
    text = urllib.request.urlopen(gateway.metrics_url, timeout=5).read().decode()
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert types["grpc_server_handled"] == "counter"
    assert "haproxy_backend_active_servers" in types  # HAProxy's exporter, in the same scrape


def test_metrics_are_served_on_their_path_only(gateway: Gateway) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(gateway.metrics_url.replace("/metrics", "/stats"), timeout=5)
    assert caught.value.code == 404
