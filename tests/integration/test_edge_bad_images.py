"""A real edge agent given the images that stalled it or ended whole streams (issue 12): each
is refused with INVALID_ARGUMENT from its header or shape, unary and inside ClassifyStream and
ModelStreamInfer, the streams go on, and other clients are answered meanwhile."""

import struct
import threading
import time

import cv2
import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2_grpc as kpb_grpc

from edgecascade.edge.tools.samples import labelled_frames
from edgecascade.v1 import cascade_pb2 as pb
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc
from tests.helpers import start_agent
from tests.unit.test_image_limits import png_declaring
from tests.unit.test_kserve_requests import request

pytestmark = pytest.mark.integration

INVALID = grpc.StatusCode.INVALID_ARGUMENT
BAD_PNGS = {
    "30000x30000": png_declaring(30000, 30000),
    "40000x40000": png_declaring(40000, 40000),
    "huge chunk": b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 0xFFFFFFF0) + b"IHDR",
}
BAD_CLASSIFY = {
    **{name: pb.ClassifyRequest(encoded_image=png) for name, png in BAD_PNGS.items()},
    "raw [2^32, 2^32]": pb.ClassifyRequest(raw_image=pb.RawImage(shape=[2**32, 2**32])),
}
BAD_KSERVE = {
    **{
        name: request("image", "BYTES", [1], bytes_contents=[png]) for name, png in BAD_PNGS.items()
    },
    "pixels [1, 2^32, 2^32, 1]": request("pixels", "UINT8", [1, 2**32, 2**32, 1], b""),
}


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    agent = start_agent(tmp_path_factory.mktemp("edge-bad-images"), None)
    yield agent
    agent.process.stop()


@pytest.fixture(scope="module")
def good():
    return labelled_frames("fashion", 1)[0].encoded


def test_bad_images_are_invalid_arguments_unary(channel, good):
    stub, kserve = pb_grpc.CascadeStub(channel), kpb_grpc.GRPCInferenceServiceStub(channel)
    for name, message in BAD_CLASSIFY.items():
        with pytest.raises(grpc.RpcError) as refused:
            stub.Classify(message, timeout=10)
        assert refused.value.code() == INVALID, name
        assert "Traceback" not in refused.value.details() and "cv::" not in refused.value.details()
    for name, message in BAD_KSERVE.items():
        with pytest.raises(grpc.RpcError) as refused:
            kserve.ModelInfer(message, timeout=10)
        assert refused.value.code() == INVALID, name
    with pytest.raises(grpc.RpcError, match="image is 30000x30000 pixels .* the limit is 40 MP"):
        stub.Classify(BAD_CLASSIFY["30000x30000"], timeout=10)
    assert stub.Classify(pb.ClassifyRequest(encoded_image=good), timeout=10).top_k


def test_a_bad_frame_costs_one_frame_of_a_classify_stream(channel, good):
    frames = []
    for i, message in enumerate(BAD_CLASSIFY.values()):
        frames += [pb.ClassifyRequest(request_id=f"good{i}", encoded_image=good), message]
    frames.append(pb.ClassifyRequest(request_id="last", encoded_image=good))
    responses = list(pb_grpc.CascadeStub(channel).ClassifyStream(iter(frames), timeout=30))
    assert len(responses) == len(frames)
    for sent, response in zip(frames, responses):
        if sent.request_id:
            assert response.request_id == sent.request_id and response.top_k
        else:
            assert response.error.code == INVALID.value[0] and response.error.message


def test_a_bad_request_costs_one_response_of_a_model_stream_infer(channel, good):
    requests = []
    for i, message in enumerate(BAD_KSERVE.values()):
        requests += [request("image", "BYTES", [1], bytes_contents=[good]), message]
        requests[-2].id = f"good{i}"
    requests.append(request("image", "BYTES", [1], bytes_contents=[good]))
    requests[-1].id = "last"
    stream = kpb_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(iter(requests), timeout=30)
    responses = list(stream)
    assert len(responses) == len(requests)
    for sent, response in zip(requests, responses):
        if sent.id:
            assert not response.error_message and response.infer_response.id == sent.id
        else:
            assert response.error_message.startswith("INVALID_ARGUMENT: ")


def test_small_calls_are_answered_while_others_send_big_images(channel, good):
    """Bad images are refused from their headers; a large valid one decodes in a thread."""
    stub = pb_grpc.CascadeStub(channel)
    big = cv2.imencode(".png", np.zeros((6000, 6000), np.uint8))[1].tobytes()  # 36 MP, valid
    done, errors = threading.Event(), []

    def heavy() -> None:
        while not done.is_set():
            for message in [*BAD_CLASSIFY.values(), pb.ClassifyRequest(encoded_image=big)]:
                try:
                    stub.Classify(message, timeout=30)
                except grpc.RpcError as e:
                    errors.append(e.code())

    senders = [threading.Thread(target=heavy) for _ in range(2)]
    for sender in senders:
        sender.start()
    try:
        slowest = 0.0
        for _ in range(20):
            started = time.perf_counter()
            assert stub.Classify(pb.ClassifyRequest(encoded_image=good), timeout=10).top_k
            slowest = max(slowest, time.perf_counter() - started)
            time.sleep(0.05)
    finally:
        done.set()
        for sender in senders:
            sender.join()
    assert slowest < 2.0, f"a 28x28 Classify waited {slowest:.2f}s behind big images"
    assert errors and set(errors) == {INVALID}
