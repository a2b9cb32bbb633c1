"""KServe v2 over HTTP/REST, statistics, repository index and Triton-shaped metrics on the edge
agent, checked with unmodified tritonclient.http (and .grpc) against a real agent and the real
local Triton with the same assertions where the two share a shape."""

import json
import socket
import ssl
import statistics
import subprocess
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from edgecascade.cloud.common import certs
from edgecascade.cloud.common.auth import Callers
from edgecascade.cloud.common.launcher import edgecascade_command
from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.ports import free_port
from edgecascade.cloud.common.transport import PLAINTEXT, Tls, Transport
from edgecascade.cloud.triton.server import TritonServer
from edgecascade.edge.tools.process import (
    AGENT_CERT,
    CALLERS,
    CLIENT_CERT,
    TOKEN,
    development_security,
)
from edgecascade.edge.tools.samples import Frame
from tests.helpers import Agent, start_agent

pytestmark = pytest.mark.integration

TRITON_MODEL = "fashion_cloud"


@pytest.fixture(scope="module")
def http_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def agent(triton: TritonServer, tmp_path_factory, http_port: int):
    """Every input escalates (threshold 1.0): the agent answers with Triton's model."""
    agent = start_agent(
        tmp_path_factory.mktemp("edge"),
        triton.grpc_url,
        "--http-port",
        str(http_port),
        "--threshold",
        "1.0",
    )
    yield agent
    agent.process.stop()


@pytest.fixture(scope="module")
def clients(agent: Agent, triton: TritonServer, http_port: int):
    """tritonclient.http to the agent and to Triton."""
    edge = PLAINTEXT.triton_http(f"127.0.0.1:{http_port}")
    cloud = PLAINTEXT.triton_http(triton.http_url)
    yield edge, cloud
    edge.close()
    cloud.close()


def pixels(frames: list[Frame]) -> np.ndarray:
    images = [
        cv2.imdecode(np.frombuffer(f.encoded, np.uint8), cv2.IMREAD_GRAYSCALE) for f in frames
    ]
    return np.stack(images)[..., None]


def pixel_input(name: str, batch: np.ndarray, binary: bool) -> httpclient.InferInput:
    tensor = httpclient.InferInput(name, list(batch.shape), "UINT8")
    tensor.set_data_from_numpy(batch, binary_data=binary)
    return tensor


def text(element: bytes | str) -> str:
    """A BYTES element: tritonclient gives bytes from binary data, str from JSON."""
    return element.decode() if isinstance(element, bytes) else element


def test_health_and_metadata_as_triton_has_them(clients, fashion_manifest: Manifest):
    edge, cloud = clients
    for client, model, version in (
        (edge, "fashion", str(fashion_manifest.version)),
        (cloud, TRITON_MODEL, str(fashion_manifest.cloud.version)),
    ):
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(model) and client.is_model_ready(model, version)
        assert not client.is_model_ready("no_such_model")
        server = client.get_server_metadata()
        assert {"name", "version", "extensions"} <= server.keys()
        assert {"statistics", "binary_tensor_data"} <= set(server["extensions"])  # perf_analyzer
        metadata = client.get_model_metadata(model)
        assert metadata["name"] == model and version in metadata["versions"]
        for tensor in metadata["inputs"] + metadata["outputs"]:
            assert tensor.keys() == {"name", "datatype", "shape"}
            assert all(isinstance(d, int) for d in tensor["shape"]) and tensor["shape"][0] == -1
        config = client.get_model_config(model)
        assert config["name"] == model and isinstance(config["max_batch_size"], int)
        batch = [-1] if config["max_batch_size"] else []
        by_name = {t["name"]: t["shape"] for t in metadata["inputs"] + metadata["outputs"]}
        for tensor in config["input"] + config["output"]:
            assert by_name[tensor["name"]] == batch + tensor["dims"], "config and metadata agree"
        with pytest.raises(InferenceServerException) as unknown:
            client.get_model_metadata("no_such_model")
        assert unknown.value.status() in ("400", "404")
    assert edge.get_server_metadata()["name"] == "edgecascade"
    outputs = {t["name"]: t for t in edge.get_model_metadata("fashion")["outputs"]}
    assert outputs["probabilities"]["shape"] == [-1, len(fashion_manifest.labels)]
    assert outputs["tier"]["datatype"] == "BYTES"


def test_a_response_is_not_held_back_by_delayed_acks(clients):
    """A JSON answer took 44 ms (TCP_NODELAY unset: the body waited for the client's delayed
    ACK of the head); Triton answers in well under a millisecond on loopback."""
    edge, _ = clients
    times = []
    for _ in range(15):
        start = time.perf_counter()
        edge.get_model_metadata("fashion")
        times.append(time.perf_counter() - start)
    assert statistics.median(times) < 0.02


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_answers_as_triton_does(clients, frames, fashion_manifest, binary: bool):
    edge, cloud = clients
    batch = pixels(frames[:5])
    on_edge = edge.infer(
        "fashion",
        [pixel_input("pixels", batch, binary)],
        outputs=[
            httpclient.InferRequestedOutput(name, binary_data=binary)
            for name in ("probabilities", "top1", "tier")
        ],
        request_id="r1",
    )
    on_cloud = cloud.infer(
        TRITON_MODEL,
        [pixel_input("image", batch, binary)],
        outputs=[httpclient.InferRequestedOutput("logits", binary_data=binary)],
    )
    for result, name in ((on_edge, "probabilities"), (on_cloud, "logits")):
        assert result.as_numpy(name).shape == (5, len(fashion_manifest.labels))
        assert result.as_numpy(name).dtype == np.float32
    # every input escalated: the agent answers with Triton's classes
    assert on_edge.as_numpy("top1").tolist() == on_cloud.as_numpy("logits").argmax(1).tolist()
    assert [text(t) for t in on_edge.as_numpy("tier")] == ["cloud"] * 5
    response = on_edge.get_response()
    assert (
        response["id"] == "r1" and response["parameters"]["tier"] == "cloud,cloud,cloud,cloud,cloud"
    )
    assert response["model_version"] == str(fashion_manifest.version)

    classes = edge.infer(
        "fashion",
        [pixel_input("pixels", batch[:1], binary)],
        outputs=[
            httpclient.InferRequestedOutput("probabilities", class_count=2, binary_data=binary)
        ],
    ).as_numpy("probabilities")
    score, index, label = text(classes[0][0]).split(":")
    assert (
        int(index) == on_edge.as_numpy("top1")[0] and label == fashion_manifest.labels[int(index)]
    )

    encoded = httpclient.InferInput("image", [2], "BYTES")
    encoded.set_data_from_numpy(np.array([f.encoded for f in frames[:2]], object), binary_data=True)
    by_image = edge.infer("fashion", [encoded])  # all outputs, binary (tritonclient's default)
    assert by_image.as_numpy("top1").tolist() == on_edge.as_numpy("top1")[:2].tolist()


@pytest.mark.parametrize("compression", ["gzip", "deflate"])
def test_compressed_requests_and_answers_as_on_triton(clients, frames, compression: str):
    edge, cloud = clients
    batch = pixels(frames[:3])
    answers = [
        client.infer(
            model,
            [pixel_input(name, batch, True)],
            request_compression_algorithm=compression,
            response_compression_algorithm=compression,
        )
        for client, model, name in ((edge, "fashion", "pixels"), (cloud, TRITON_MODEL, "image"))
    ]
    assert answers[0].as_numpy("top1").tolist() == answers[1].as_numpy("logits").argmax(1).tolist()


def test_bad_requests_get_triton_like_errors_and_failures_count(clients, agent, http_port):
    edge, _ = clients
    model = {"model": "fashion", "version": "1"}
    before = agent.metric("nv_inference_request_failure", **model, reason="OTHER")

    def fails(*args, **kwargs) -> InferenceServerException:
        with pytest.raises(InferenceServerException) as err:
            edge.infer(*args, **kwargs)
        return err.value

    junk = httpclient.InferInput("image", [1], "BYTES")
    junk.set_data_from_numpy(np.array([b"not an image"], object))
    bad = fails("fashion", [junk])
    assert bad.status() == "400" and "cannot decode" in bad.message()
    unknown = fails("imagenet", [junk])
    assert unknown.status() == "404" and "serves 'fashion'" in unknown.message()
    wrong = fails("fashion", [junk], outputs=[httpclient.InferRequestedOutput("logits")])
    assert wrong.status() == "400" and "unknown output 'logits'" in wrong.message()
    url = f"http://127.0.0.1:{http_port}/v2/models/fashion/infer"  # not JSON at all
    request = urllib.request.Request(url, data=b"{oops", method="POST")
    with pytest.raises(urllib.error.HTTPError) as raw:
        urllib.request.urlopen(request, timeout=5)
    assert raw.value.code == 400 and b"not a KServe v2 inference request" in raw.value.read()
    for path, method, status in (("/v2/nothing", "GET", 404), ("/v2/health/live", "POST", 405)):
        request = urllib.request.Request(f"http://127.0.0.1:{http_port}{path}", method=method)
        with pytest.raises(urllib.error.HTTPError) as off_route:
            urllib.request.urlopen(request, data=b"" if method == "POST" else None, timeout=5)
        assert off_route.value.code == status
        assert "routes are under /v2" in json.loads(off_route.value.read())["error"]
    # the agent counts the requests it answered wrongly as Triton's reason OTHER
    assert agent.metric("nv_inference_request_failure", **model, reason="OTHER") == before + 2


def test_statistics_and_repository_index_as_triton_has_them(clients, agent, frames):
    edge, cloud = clients
    grpc_edge = PLAINTEXT.triton(agent.address)
    before = edge.get_inference_statistics("fashion")["model_stats"][0]
    for _ in range(3):
        edge.infer("fashion", [pixel_input("pixels", pixels(frames[:4]), True)])
    after = edge.get_inference_statistics("fashion", "1")["model_stats"][0]
    assert after["inference_count"] - before["inference_count"] == 12
    assert after["execution_count"] - before["execution_count"] == 3
    stats, earlier = after["inference_stats"], before["inference_stats"]
    for stage in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
        assert stats[stage]["count"] - earlier[stage]["count"] == 3
        assert stats[stage]["ns"] > earlier[stage]["ns"]
    assert stats["success"]["ns"] >= stats["compute_infer"]["ns"] > 0
    assert any(b["batch_size"] == 4 for b in after["batch_stats"])
    same = grpc_edge.get_inference_statistics("fashion", as_json=True)["model_stats"][0]
    assert int(same["inference_count"]) == after["inference_count"]  # one implementation

    triton = cloud.get_inference_statistics(TRITON_MODEL)["model_stats"][0]
    assert triton.keys() == after.keys()
    assert triton["inference_stats"].keys() == stats.keys()

    index = edge.get_model_repository_index()
    assert index == [{"name": "fashion", "version": "1", "state": "READY"}]
    (model,) = grpc_edge.get_model_repository_index().models
    assert (model.name, model.version, model.state) == ("fashion", "1", "READY")
    assert {m["name"] for m in cloud.get_model_repository_index()} >= {TRITON_MODEL}
    assert all(m.keys() == index[0].keys() for m in cloud.get_model_repository_index())
    grpc_edge.close()


def test_log_settings_as_triton_has_them(clients, agent):
    edge, cloud = clients
    ours, theirs = edge.get_log_settings(), cloud.get_log_settings()
    assert ours.keys() == theirs.keys()
    assert {k: type(v) for k, v in ours.items()} == {k: type(v) for k, v in theirs.items()}
    assert edge.update_log_settings({"log_info": False})["log_info"] is False
    on_grpc = PLAINTEXT.triton(agent.address)
    assert on_grpc.get_log_settings(as_json=True)["settings"]["log_info"]["bool_param"] is False
    assert edge.update_log_settings({"log_info": True})["log_info"] is True
    with pytest.raises(InferenceServerException) as refused:
        edge.update_log_settings({"log_file": "/tmp/agent.log"})
    assert refused.value.status() == "400" and "cannot be changed" in refused.value.message()
    with pytest.raises(InferenceServerException) as unknown:
        on_grpc.update_log_settings({"log_colour": True})
    assert "unknown log setting" in unknown.value.message()
    on_grpc.close()


def test_trace_settings_as_triton_has_them(clients, agent):
    edge, cloud = clients
    ours, theirs = edge.get_trace_settings(), cloud.get_trace_settings()
    assert ours.keys() == theirs.keys()
    assert {k: type(v) for k, v in ours.items()} == {k: type(v) for k, v in theirs.items()}
    assert ours["trace_mode"] == "opentelemetry" and ours["trace_level"] == ["OFF"]  # no collector
    assert edge.get_trace_settings(model_name="fashion") == ours
    assert edge.update_trace_settings(settings={"trace_rate": "10"})["trace_rate"] == "10"
    on_grpc = PLAINTEXT.triton(agent.address)
    assert on_grpc.get_trace_settings(as_json=True)["settings"]["trace_rate"]["value"] == ["10"]
    assert (
        edge.update_trace_settings(settings={"trace_rate": None})["trace_rate"]
        == ours["trace_rate"]
    )
    with pytest.raises(InferenceServerException) as off:
        edge.update_trace_settings(settings={"trace_level": ["TIMESTAMPS"]})
    assert off.value.status() == "400" and "--otlp-endpoint" in off.value.message()
    with pytest.raises(InferenceServerException) as unknown:
        on_grpc.get_trace_settings(model_name="imagenet")
    assert unknown.value.status() == "StatusCode.NOT_FOUND"
    assert "serves 'fashion'" in unknown.value.message()
    assert "trace" in edge.get_server_metadata()["extensions"]  # as Triton lists it
    on_grpc.close()


def families(url: str) -> dict:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_metrics_share_triton_names_types_and_labels(agent, triton, clients, frames):
    edge, cloud = clients
    edge.infer("fashion", [pixel_input("pixels", pixels(frames[:2]), True)])
    cloud.infer(TRITON_MODEL, [pixel_input("image", pixels(frames[:2]), True)])
    ours, theirs = families(agent.metrics_url), families(triton.metrics_url)
    wanted = {
        "nv_inference_request_success",
        "nv_inference_request_failure",
        "nv_inference_count",
        "nv_inference_exec_count",
        "nv_inference_request_duration_us",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_input_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_compute_output_duration_us",
        "nv_inference_pending_request_count",
        "nv_cpu_utilization",
        "nv_cpu_memory_total_bytes",
        "nv_cpu_memory_used_bytes",
    }
    assert wanted <= ours.keys() and wanted <= theirs.keys()
    shared = {n for n in ours.keys() & theirs.keys() if n.startswith("nv_")}
    for name in sorted(shared):
        assert ours[name].type == theirs[name].type, name
        labels = {frozenset(s.labels) for s in ours[name].samples}
        assert labels == {frozenset(s.labels) for s in theirs[name].samples}, name
    reasons = {s.labels["reason"]: s.value for s in ours["nv_inference_request_failure"].samples}
    assert reasons.keys() == {"OTHER", "BACKEND", "CANCELED", "REJECTED"}
    assert {s.labels["reason"] for s in theirs["nv_inference_request_failure"].samples} == (
        reasons.keys()
    )
    assert "process_cpu_seconds" in ours and "process_resident_memory_bytes" in ours
    with pytest.raises(urllib.error.HTTPError) as elsewhere:
        urllib.request.urlopen(agent.metrics_url.replace("/metrics", "/other"), timeout=5)
    assert elsewhere.value.code == 404


def served_certificate(port: int, folder) -> bytes:
    """The PEM certificate the agent's REST port shows a new mutual-TLS connection."""
    context = ssl.create_default_context(cafile=str(folder / certs.CA_CERT))
    context.load_cert_chain(folder / f"{CLIENT_CERT}.pem", folder / f"{CLIENT_CERT}.key")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            der = tls.getpeercert(binary_form=True)
    return ssl.DER_cert_to_PEM_cert(der).encode()


def test_rest_has_the_grpc_ports_tls_and_caller_check(triton, frames, tmp_path):
    security = development_security(tmp_path / "certs")
    folder = security.folder
    certs.issue(folder, "camera-7", kind="client")  # a caller known by its certificate
    callers = Callers.load(folder / CALLERS).with_certificate("camera", "camera-7", ["infer"])
    callers.save(folder / CALLERS)
    port = free_port()
    agent = start_agent(tmp_path, None, "--http-port", str(port), security=security)

    def client(cert: str) -> httpclient.InferenceServerClient:
        tls = Tls(folder / certs.CA_CERT, folder / f"{cert}.pem", folder / f"{cert}.key")
        return Transport(tls=tls).triton_http(f"127.0.0.1:{port}")

    token = {"authorization": f"Bearer {(folder / TOKEN).read_text().strip()}"}
    batch = pixel_input("pixels", pixels(frames[:1]), True)
    with_token, camera = client(CLIENT_CERT), client("camera-7")
    try:
        assert with_token.infer("fashion", [batch], headers=token).as_numpy("top1").shape == (1,)
        assert camera.infer("fashion", [batch]).as_numpy("top1").shape == (1,)  # no token
        with pytest.raises(InferenceServerException) as unknown:  # its certificate: no caller
            with_token.infer("fashion", [batch])
        assert unknown.value.status() == "401" and "'edge-client'" in unknown.value.message()
        with pytest.raises(InferenceServerException) as scope:
            camera.get_inference_statistics("fashion")  # needs the status scope
        assert scope.value.status() == "403" and "'status'" in scope.value.message()
        with pytest.raises(InferenceServerException) as index:  # needs the admin scope
            with_token.get_model_repository_index(headers=token)
        assert index.value.status() == "403" and "'admin'" in index.value.message()
        plain = PLAINTEXT.triton_http(f"127.0.0.1:{port}")
        with pytest.raises(Exception):  # noqa: B017  # a plaintext request on a TLS port
            plain.is_server_live()
        plain.close()

        # A renewed certificate is used for new connections, without a restart.
        before = served_certificate(port, folder)
        time.sleep(0.01)  # a new mtime
        certs.issue(folder, AGENT_CERT)
        assert served_certificate(port, folder) != before
        assert served_certificate(port, folder) == (folder / f"{AGENT_CERT}.pem").read_bytes()
        renewed = client(CLIENT_CERT)
        assert renewed.infer("fashion", [batch], headers=token).as_numpy("top1").shape == (1,)
        renewed.close()
    finally:
        with_token.close()
        camera.close()
        agent.process.stop()


@pytest.mark.parametrize("option", ["--http-port", "--metrics-port"])
def test_a_taken_http_port_is_one_error_line(fashion_manifest, option: str):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        command = edgecascade_command(
            "edge", "serve", "--insecure", "--family", "fashion", "--port", "0", option, str(taken)
        )
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and f"127.0.0.1:{taken}" in last and "in use" in last
    assert "Traceback" not in result.stderr
