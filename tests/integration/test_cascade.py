"""The cascade end to end: a real Triton server, a real edge agent, real gRPC, real images."""

import grpc
import numpy as np
import pytest

from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.cloud.triton.server import TritonServer
from edgecascade.edge.tools.process import EdgeProcess
from edgecascade.v1 import cascade_pb2 as pb
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc
from tests.helpers import classify

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def edge(triton: TritonServer, tmp_path_factory) -> EdgeProcess:
    with EdgeProcess(
        "fashion", triton.grpc_url, tmp_path_factory.mktemp("edge") / "edge.log"
    ) as agent:
        yield agent


@pytest.fixture(scope="module")
def stub(edge: EdgeProcess):
    with PLAINTEXT.channel(edge.address) as channel:
        yield pb_grpc.CascadeStub(channel)


def test_confident_inputs_stay_at_the_edge_unsure_ones_go_to_the_cloud(
    stub, frames, fashion_manifest: Manifest
):
    threshold = fashion_manifest.policy.threshold
    responses = [classify(stub, f) for f in frames]
    at_edge = [r for r in responses if r.edge_confidence >= threshold]
    unsure = [r for r in responses if r.edge_confidence < threshold]
    assert at_edge and unsure, "the test set should hold both confident and unsure inputs"
    for r in at_edge:
        assert r.tier == pb.EDGE and not r.degraded
        assert r.top_k[0].class_id == r.edge_class_id and r.timings.cloud_ms == 0
    for r in unsure:
        assert r.tier == pb.CLOUD and not r.degraded, r.degraded_reason
        assert r.versions.cloud == fashion_manifest.cloud.key
        assert r.timings.cloud_ms > 0 and r.timings.total_ms >= r.timings.cloud_ms
    assert all(r.versions.edge == fashion_manifest.edge.key for r in responses)
    # The cloud tier earns its keep: it is right more often than the edge on the unsure inputs.
    labels = {id(r): f.label for r, f in zip(responses, frames)}
    cloud_right = np.mean([r.top_k[0].class_id == labels[id(r)] for r in unsure])
    edge_right = np.mean([r.edge_class_id == labels[id(r)] for r in unsure])
    assert cloud_right > edge_right


def test_top_k_is_sorted_named_and_sized(stub, frames, fashion_manifest):
    r = classify(stub, frames[0], top_k=3, request_id="frame-0")
    assert r.request_id == "frame-0"
    assert [p.name for p in r.top_k] == [fashion_manifest.labels[p.class_id] for p in r.top_k]
    scores = [p.score for p in r.top_k]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001


def test_raw_pixels_get_the_same_answer_as_the_encoded_image(stub, frames):
    import cv2

    image = cv2.imdecode(np.frombuffer(frames[1].encoded, np.uint8), cv2.IMREAD_UNCHANGED)
    raw = pb.RawImage(shape=list(image.shape), data=image.tobytes())
    by_raw = stub.Classify(pb.ClassifyRequest(raw_image=raw), timeout=10)
    by_png = classify(stub, frames[1])
    assert by_raw.top_k[0].class_id == by_png.top_k[0].class_id
    assert by_raw.edge_confidence == pytest.approx(by_png.edge_confidence, abs=1e-6)


def test_stream_answers_every_frame_in_order(stub, frames):
    requests = (
        pb.ClassifyRequest(request_id=str(i), encoded_image=f.encoded)
        for i, f in enumerate(frames[:120])
    )
    responses = list(stub.ClassifyStream(requests, timeout=60))
    assert [r.request_id for r in responses] == [str(i) for i in range(120)]
    assert not any(r.HasField("error") for r in responses)


def test_malformed_image_is_invalid_argument_and_the_agent_keeps_serving(stub, frames):
    with pytest.raises(grpc.RpcError) as err:
        stub.Classify(pb.ClassifyRequest(encoded_image=b"\x89PNG but not really"), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot decode" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        stub.Classify(
            pb.ClassifyRequest(raw_image=pb.RawImage(shape=[28, 28], data=b"\0" * 10)), timeout=10
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "784" in err.value.details()
    # A bad frame in a stream is answered with an error; the frames around it are served.
    requests = [
        pb.ClassifyRequest(request_id="a", encoded_image=frames[0].encoded),
        pb.ClassifyRequest(request_id="bad", encoded_image=b"junk"),
        pb.ClassifyRequest(request_id="c", encoded_image=frames[2].encoded),
    ]
    a, bad, c = stub.ClassifyStream(iter(requests), timeout=30)
    assert (
        bad.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        and "cannot decode" in bad.error.message
    )
    assert a.top_k and c.top_k and not a.HasField("error") and not c.HasField("error")
    assert classify(stub, frames[3]).top_k
    status = stub.GetStatus(pb.GetStatusRequest(), timeout=5)
    assert status.errors >= 3


def test_status_reports_versions_device_and_cloud(stub, fashion_manifest, triton):
    status = stub.GetStatus(pb.GetStatusRequest(), timeout=5)
    assert status.versions.edge == fashion_manifest.edge.key
    assert status.versions.cloud == fashion_manifest.cloud.key
    assert "CPU" in status.device and status.cloud_ready and status.cloud_url == triton.grpc_url
    assert status.threshold == pytest.approx(fashion_manifest.policy.threshold)


def test_with_triton_stopped_answers_come_back_degraded(fashion_repository, frames, tmp_path):
    """Every input is escalated (threshold 1.0), then the cloud goes away."""
    with TritonServer(fashion_repository, log_path=tmp_path / "triton.log") as triton:
        with EdgeProcess(
            "fashion", triton.grpc_url, tmp_path / "edge.log", "--threshold", "1.0"
        ) as edge:
            with PLAINTEXT.channel(edge.address) as channel:
                stub = pb_grpc.CascadeStub(channel)
                assert classify(stub, frames[0]).tier == pb.CLOUD
                triton.stop()
                responses = [classify(stub, f) for f in frames[:20]]
                streamed = list(
                    stub.ClassifyStream(
                        (pb.ClassifyRequest(encoded_image=f.encoded) for f in frames[20:40]),
                        timeout=60,
                    )
                )
    for r in responses + streamed:
        assert r.tier == pb.EDGE and r.degraded and r.degraded_reason == "cloud-unavailable"
        assert r.top_k[0].class_id == r.edge_class_id
    assert len(streamed) == 20


def test_the_agent_scores_like_the_offline_calibration(stub, frames, fashion_manifest):
    """The agent's confidence (both views when the policy mirrors) is the score the threshold
    was calibrated on: the build's logits of the same test images, scored offline."""
    from edgecascade.cloud.common.paths import family_dir
    from edgecascade.router.policy.calibration import Split
    from edgecascade.router.policy.policies import policy_from_manifest

    policy = policy_from_manifest(fashion_manifest.policy)
    offline = Split.load(family_dir("fashion") / "test_predictions.npz").confidence(policy)
    online = [classify(stub, f).edge_confidence for f in frames[:100]]
    np.testing.assert_allclose(online, offline[:100], atol=1e-4)
    assert stub.GetStatus(pb.GetStatusRequest(), timeout=5).policy == policy.label


def test_the_agent_answers_with_the_wide_cnn(stub, frames, fashion_manifest):
    """The served edge model is the single wide CNN (one member, ~6.0M MACs per image), not the
    3-member ensemble it replaced: the agent's edge answers are the mean, over the policy's
    views, of that INT8 model's probabilities, computed here with OpenVINO."""
    import openvino as ov

    from edgecascade.cloud.build.costs import macs_per_image
    from edgecascade.cloud.build.datasets import fashion
    from edgecascade.cloud.common.paths import edge_model_file, family_dir
    from edgecascade.cloud.common.preprocessing import mirrored
    from edgecascade.router.policy.policies import policy_from_manifest

    core = ov.Core()
    served = core.read_model(edge_model_file(family_dir("fashion")))
    assert str(served.outputs[0].partial_shape) == "[?,1,10]"
    assert fashion_manifest.edge.metrics["members"] == 1
    assert 5.9e6 < macs_per_image(served, (28, 28, 1)) < 6.1e6  # 3 members x 2 views: 6.2M
    n = 60
    images = fashion("test").images[:n, ..., None]
    model = core.compile_model(served, "CPU")
    policy = policy_from_manifest(fashion_manifest.policy)
    views = policy.views(model(images)[0], model(mirrored(images))[0] if policy.mirror else None)
    expected, confidence = policy.answer(views)
    responses = [classify(stub, f, top_k=10) for f in frames[:n]]
    at_edge = [i for i, r in enumerate(responses) if r.tier == pb.EDGE]
    assert len(at_edge) > n / 2
    for i in at_edge:
        got = np.zeros(10)
        for p in responses[i].top_k:
            got[p.class_id] = p.score
        np.testing.assert_allclose(got, expected[i], atol=1e-4)
        assert responses[i].edge_confidence == pytest.approx(confidence[i], abs=1e-4)
