"""The edge agent as a serving process: KServe v2 for unmodified tritonclient callers, health,
reflection, Prometheus metrics, limits and a graceful stop. Real Triton, real agents, real
images, real gRPC on loopback."""

import os
import re
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import cv2
import grpc
import numpy as np
import pytest
import tritonclient.grpc as tc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tritonclient.utils import InferenceServerException

from edgecascade.cloud.common.launcher import edgecascade_command
from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.cloud.triton.server import TritonServer
from edgecascade.v1 import cascade_pb2 as pb
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc
from tests.helpers import Agent, classify, start_agent

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
TIERS = {pb.EDGE: "edge", pb.CLOUD: "cloud"}


@pytest.fixture(scope="module")
def agent(triton: TritonServer, tmp_path_factory):
    agent = start_agent(tmp_path_factory.mktemp("edge"), triton.grpc_url)
    yield agent
    agent.process.stop()


@pytest.fixture(scope="module")
def triton_client(agent: Agent):
    client = PLAINTEXT.triton(agent.address)
    yield client
    client.close()


def image_input(*encoded: bytes) -> tc.InferInput:
    tensor = tc.InferInput("image", [len(encoded)], "BYTES")
    tensor.set_data_from_numpy(np.array(encoded, dtype=object))
    return tensor


def test_tritonclient_sees_a_triton_like_server(triton_client, fashion_manifest: Manifest):
    assert triton_client.is_server_live() and triton_client.is_server_ready()
    assert triton_client.is_model_ready("fashion")
    assert triton_client.is_model_ready("fashion", str(fashion_manifest.version))
    assert not triton_client.is_model_ready("imagenet")
    metadata = triton_client.get_model_metadata("fashion", as_json=True)
    assert metadata["name"] == "fashion" and metadata["versions"] == [str(fashion_manifest.version)]
    assert {t["name"]: t["datatype"] for t in metadata["inputs"]} == {
        "image": "BYTES",
        "pixels": "UINT8",
    }
    outputs = {t["name"]: t for t in metadata["outputs"]}
    assert outputs["probabilities"]["shape"] == ["-1", str(len(fashion_manifest.labels))]
    assert triton_client.get_server_metadata(as_json=True)["name"] == "edgecascade"
    config = triton_client.get_model_config("fashion", as_json=True)["config"]
    assert config["parameters"]["cloud_model"]["string_value"] == fashion_manifest.cloud.key


def test_kserve_infer_gives_the_same_answer_as_classify(
    triton_client, channel, frames, fashion_manifest
):
    stub = pb_grpc.CascadeStub(channel)
    tiers = set()
    for frame in frames[:80]:
        native = stub.Classify(pb.ClassifyRequest(encoded_image=frame.encoded), timeout=10)
        result = triton_client.infer("fashion", [image_input(frame.encoded)], client_timeout=10)
        parameters = result.get_response().parameters
        assert result.as_numpy("top1")[0] == native.top_k[0].class_id
        assert result.as_numpy("probabilities")[0].max() == pytest.approx(
            native.top_k[0].score, abs=1e-6
        )
        assert parameters["tier"].string_param == TIERS[native.tier]
        assert parameters["edge_confidence"].double_param == pytest.approx(
            native.edge_confidence, abs=1e-6
        )
        assert (
            not parameters["degraded"].bool_param
            and parameters["degraded_reason"].string_param == ""
        )
        assert parameters["edge_model"].string_param == fashion_manifest.edge.key
        assert parameters["cloud_model"].string_param == fashion_manifest.cloud.key
        tiers.add(TIERS[native.tier])
    assert tiers == {"edge", "cloud"}, "the frames should exercise both tiers"


def test_kserve_batches_raw_pixels_and_classification(
    triton_client, channel, frames, fashion_manifest
):
    stub = pb_grpc.CascadeStub(channel)
    batch = frames[:6]
    natives = [
        stub.Classify(pb.ClassifyRequest(encoded_image=f.encoded), timeout=10) for f in batch
    ]
    expected = [n.top_k[0].class_id for n in natives]
    by_image = triton_client.infer("fashion", [image_input(*(f.encoded for f in batch))])
    assert by_image.as_numpy("top1").tolist() == expected
    assert by_image.get_response().parameters["tier"].string_param == ",".join(
        TIERS[n.tier] for n in natives
    )
    pixels = np.stack(
        [cv2.imdecode(np.frombuffer(f.encoded, np.uint8), cv2.IMREAD_GRAYSCALE) for f in batch]
    )
    tensor = tc.InferInput("pixels", [*pixels.shape, 1], "UINT8")
    tensor.set_data_from_numpy(pixels[..., None])
    by_pixels = triton_client.infer("fashion", [tensor])
    assert by_pixels.as_numpy("top1").tolist() == expected
    classes = triton_client.infer(
        "fashion",
        [image_input(batch[0].encoded)],
        outputs=[tc.InferRequestedOutput("probabilities", class_count=3)],
    ).as_numpy("probabilities")
    score, index, label = classes[0][0].decode().split(":")
    assert int(index) == expected[0] and label == fashion_manifest.labels[expected[0]]
    assert float(score) == pytest.approx(natives[0].top_k[0].score, abs=1e-5) and classes.shape == (
        1,
        3,
    )


def test_kserve_stream_answers_in_order_and_reports_bad_requests(agent, frames):
    results: list = []
    done = threading.Event()
    client = PLAINTEXT.triton(agent.address)

    def callback(result, error):
        results.append((result, error))
        if len(results) == 12:
            done.set()

    client.start_stream(callback)
    for i, frame in enumerate(frames[:12]):
        client.async_stream_infer(
            "fashion", [image_input(b"junk" if i == 5 else frame.encoded)], request_id=str(i)
        )
    assert done.wait(30)
    client.stop_stream()
    client.close()
    assert [r.get_response().id for r, e in results if e is None] == [
        str(i) for i in range(12) if i != 5
    ]
    (error,) = [e for _, e in results if e is not None]
    assert "INVALID_ARGUMENT" in str(error) and "cannot decode" in str(error)


def test_bad_kserve_requests_get_clear_status_codes_and_the_agent_keeps_serving(
    triton_client, frames
):
    def fails(*args, **kwargs) -> InferenceServerException:
        with pytest.raises(InferenceServerException) as err:
            triton_client.infer(*args, **kwargs)
        return err.value

    unknown = fails("imagenet", [image_input(frames[0].encoded)])
    assert unknown.status() == "StatusCode.NOT_FOUND" and "serves 'fashion'" in unknown.message()
    junk = fails("fashion", [image_input(b"\x89PNG but not really")])
    assert junk.status() == "StatusCode.INVALID_ARGUMENT" and "cannot decode" in junk.message()
    wrong_type = tc.InferInput("image", [1, 4], "FP32")
    wrong_type.set_data_from_numpy(np.zeros((1, 4), np.float32))
    assert "must be BYTES" in fails("fashion", [wrong_type]).message()
    short = tc.InferInput("pixels", [1, 28, 28, 1], "UINT8")
    short.set_data_from_numpy(np.zeros((1, 28, 28, 1), np.uint8))
    short._raw_content = short._raw_content[:100]
    assert "needs 784 bytes, got 100" in fails("fashion", [short]).message()
    wrong_output = fails(
        "fashion", [image_input(frames[0].encoded)], outputs=[tc.InferRequestedOutput("logits")]
    )
    assert (
        wrong_output.status() == "StatusCode.INVALID_ARGUMENT"
        and "unknown output 'logits'" in wrong_output.message()
    )
    assert triton_client.infer("fashion", [image_input(frames[0].encoded)]).as_numpy(
        "top1"
    ).shape == (1,)


def test_health_reflection_and_metrics_answer(
    agent, channel, triton_client, frames, fashion_manifest
):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "edgecascade.v1.Cascade", "inference.GRPCInferenceService"):
        assert (
            health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
            == SERVING
        )
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    (answer,) = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    services = {s.name for s in answer.list_services_response.service}
    assert {
        "edgecascade.v1.Cascade",
        "inference.GRPCInferenceService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= services

    model = {"model": "fashion", "version": str(fashion_manifest.version)}
    samples = {
        "success": ("nv_inference_request_success", model),
        "count": ("nv_inference_count", model),
        "invalid": ("nv_inference_request_failure", {**model, "reason": "OTHER"}),
        "total": ("edgecascade_latency_seconds_count", {"hop": "total"}),
        "escalations": ("edgecascade_escalations_total", {}),
    }

    def scrape() -> dict[str, float]:
        return {key: agent.metric(name, **labels) for key, (name, labels) in samples.items()}

    before = scrape()
    triton_client.infer("fashion", [image_input(frames[0].encoded, frames[1].encoded)])
    responses = [classify(pb_grpc.CascadeStub(channel), f) for f in frames[2:42]]
    escalated = sum(r.tier == pb.CLOUD or r.degraded for r in responses)
    with pytest.raises(InferenceServerException):
        triton_client.infer("fashion", [image_input(b"junk")])
    moved = {key: value - before[key] for key, value in scrape().items()}
    assert escalated >= 1
    assert moved == {
        "success": 41,
        "count": 42,
        "invalid": 1,
        "total": 41,
        "escalations": escalated,
    }
    info = {
        "cloud": fashion_manifest.cloud.key,
        "edge": fashion_manifest.edge.key,
        "family": "fashion",
        "version": str(fashion_manifest.version),
    }
    assert agent.metric("edgecascade_model_info", **info) == 1.0


def test_overload_is_refused_at_once_and_the_agent_stays_healthy(triton, frames, tmp_path):
    """Every input escalates (threshold 1.0), so calls stay in flight long enough to pile up."""
    agent = start_agent(
        tmp_path,
        triton.grpc_url,
        "--max-in-flight",
        "2",
        "--threshold",
        "1.0",
        "--max-message-bytes",
        "65536",
    )
    try:
        with PLAINTEXT.channel(agent.address) as channel:
            stub = pb_grpc.CascadeStub(channel)
            client = PLAINTEXT.triton(agent.address)

            def native(frame):
                return stub.Classify(pb.ClassifyRequest(encoded_image=frame.encoded), timeout=30)

            def kserve(frame):
                return client.infer("fashion", [image_input(frame.encoded)], client_timeout=30)

            calls = [(native if i % 2 else kserve, f) for i, f in enumerate(frames[:64])]
            outcomes = []
            with ThreadPoolExecutor(32) as pool:
                for future in [pool.submit(call, frame) for call, frame in calls]:
                    try:
                        future.result()
                        outcomes.append("ok")
                    except grpc.RpcError as e:
                        assert (
                            e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                            and "max_in_flight" in e.details()
                        )
                        outcomes.append("rejected")
                    except InferenceServerException as e:
                        assert (
                            e.status() == "StatusCode.RESOURCE_EXHAUSTED"
                            and "max_in_flight" in e.message()
                        )
                        outcomes.append("rejected")
            assert "ok" in outcomes and "rejected" in outcomes, outcomes
            rejected = {"model": "fashion", "reason": "REJECTED", "version": "1"}
            assert agent.metric("nv_inference_request_failure", **rejected) == outcomes.count(
                "rejected"
            )

            # A stream may have more frames in flight (stream_window 8) than the limit allows:
            # the frames past it wait their turn (back-pressure), none is refused.
            streamed = list(
                stub.ClassifyStream(
                    (
                        pb.ClassifyRequest(request_id=str(i), encoded_image=f.encoded)
                        for i, f in enumerate(frames[:24])
                    ),
                    timeout=60,
                )
            )
            assert [r.request_id for r in streamed] == [str(i) for i in range(24)]
            assert [r.error for r in streamed if r.HasField("error")] == []

            # Still healthy and serving once the burst is over.
            health = health_pb2_grpc.HealthStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == SERVING
            assert native(frames[0]).tier == pb.CLOUD
            assert kserve(frames[1]).get_response().parameters["tier"].string_param == "cloud"

            # Messages past --max-message-bytes are refused by gRPC itself.
            big = cv2.imencode(
                ".png", np.random.default_rng(0).integers(0, 255, (300, 300), np.uint8)
            )[1]
            with pytest.raises(grpc.RpcError) as err:
                stub.Classify(pb.ClassifyRequest(encoded_image=big.tobytes()), timeout=10)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            client.close()
    finally:
        agent.process.stop()


def test_sigterm_drains_health_and_finishes_the_stream_in_flight(frames, tmp_path):
    agent = start_agent(tmp_path, None, "--grace", "20")
    terminated = threading.Event()

    def camera():
        yield pb.ClassifyRequest(request_id="0", encoded_image=frames[0].encoded)
        terminated.wait(30)  # the rest of the frames are sent after SIGTERM
        for i, frame in enumerate(frames[1:21], start=1):
            yield pb.ClassifyRequest(request_id=str(i), encoded_image=frame.encoded)

    try:
        with PLAINTEXT.channel(agent.address) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(), timeout=60
            )
            assert next(watch).status == SERVING
            responses = pb_grpc.CascadeStub(channel).ClassifyStream(camera(), timeout=60)
            first = next(responses)
            stopper = threading.Thread(target=agent.process.stop, args=(30,))
            stopper.start()  # SIGTERM, then wait for the exit
            assert next(watch).status == NOT_SERVING
            watch.cancel()
            terminated.set()
            rest = list(responses)
            stopper.join(30)
    finally:
        terminated.set()
        agent.process.stop()
    assert [r.request_id for r in [first, *rest]] == [str(i) for i in range(21)]
    assert all(r.top_k and not r.HasField("error") for r in rest)
    assert agent.process.returncode == 0, agent.process.log_tail()
    assert "stopped" in agent.process.log_tail()


def test_the_agent_runs_on_uvloop_by_default_and_on_asyncio_when_asked(
    agent, triton, frames, tmp_path
):
    """uvloop (installed with the project) runs the agent unless `--event-loop asyncio` says
    otherwise; both loops give the same answers (the same cloud behind both, for the frames
    they escalate), on unary calls and on a stream."""
    on_asyncio = start_agent(tmp_path, triton.grpc_url, "--event-loop", "asyncio")
    try:
        answers = {}
        for name, served in (("uvloop", agent), ("asyncio", on_asyncio)):
            assert f"event loop {name}" in served.process.log_tail()
            with PLAINTEXT.channel(served.address) as channel:
                stub = pb_grpc.CascadeStub(channel)
                unary = [classify(stub, frame, top_k=3) for frame in frames[:8]]
                stream = list(
                    stub.ClassifyStream(
                        (pb.ClassifyRequest(encoded_image=f.encoded, top_k=3) for f in frames[:8]),
                        timeout=30,
                    )
                )
            answers[name] = [[(c.class_id, round(c.score, 5)) for c in r.top_k] for r in unary]
            assert answers[name] == [
                [(c.class_id, round(c.score, 5)) for c in r.top_k] for r in stream
            ]
        assert answers["uvloop"] == answers["asyncio"] and all(answers["asyncio"])
    finally:
        on_asyncio.process.stop()


def test_an_invalid_config_fails_at_start_with_a_clear_message(tmp_path):
    config = tmp_path / "edge.toml"
    config.write_text('family = "fashion"\nport = 70000\nmax_in_flght = 4\n')
    result = subprocess.run(
        edgecascade_command("edge", "serve", "--config", str(config)),
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "EDGECASCADE_GRACE_S": "soon"},
    )
    assert result.returncode == 2
    assert re.search(
        rf"port \(config file {re.escape(str(config))}\): .*65535, got 70000", result.stderr
    )
    assert "max_in_flght" in result.stderr and "unknown setting" in result.stderr
    assert "grace_s (environment EDGECASCADE_GRACE_S)" in result.stderr
    config.write_text("port = [")
    broken = subprocess.run(
        edgecascade_command("edge", "serve", "--config", str(config)),
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert broken.returncode == 2 and "is not valid TOML" in broken.stderr
