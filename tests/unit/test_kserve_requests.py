"""Reading KServe v2 ModelInferRequests the way tritonclient writes them (no server)."""

import asyncio
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as kpb
from tritonclient.utils import serialize_byte_tensor

from edgecascade.cloud.common.preprocessing import InvalidImage
from edgecascade.edge.serving.kserve import KServeService, images_of, requested_outputs
from edgecascade.edge.serving.limits import InFlightLimit, Overloaded
from edgecascade.router.cascade.cascade import Answers
from edgecascade.router.cascade.degraded import DegradedReason
from tests.unit.test_cascade_routing import manifest

PNG = cv2.imencode(".png", np.arange(28 * 28, dtype=np.uint8).reshape(28, 28))[1].tobytes()


def request(name: str, datatype: str, shape: list[int], raw: bytes | None = None, **contents):
    message = kpb.ModelInferRequest(model_name="fashion")
    tensor = message.inputs.add(name=name, datatype=datatype, shape=shape)
    if raw is not None:
        message.raw_input_contents.append(raw)
    for field, values in contents.items():
        getattr(tensor.contents, field).extend(values)
    return message


def extra_raw_contents() -> kpb.ModelInferRequest:
    """Issue 12 item 7: a second raw_input_contents (no input of its own) was ignored."""
    message = request("image", "BYTES", [1], serialize_byte_tensor(np.array([PNG], object)).item())
    message.raw_input_contents.append(b"junk")
    return message


def test_encoded_images_from_raw_or_typed_contents():
    raw = serialize_byte_tensor(np.array([PNG, PNG], dtype=object)).item()
    from_raw = images_of(request("image", "BYTES", [2], raw), max_batch=4)
    from_contents = images_of(request("image", "BYTES", [1], bytes_contents=[PNG]), max_batch=4)
    assert len(from_raw) == 2 and all(i.shape == (28, 28) for i in from_raw + from_contents)
    assert np.array_equal(from_raw[1], from_contents[0])


def test_pixels_as_a_batch_or_one_image():
    batch = np.stack([np.full((4, 5, 3), i, np.uint8) for i in range(3)])
    images = images_of(request("pixels", "UINT8", list(batch.shape), batch.tobytes()), max_batch=4)
    assert [int(i[0, 0, 0]) for i in images] == [0, 1, 2] and images[0].shape == (4, 5, 3)
    (one,) = images_of(request("pixels", "UINT8", [2, 2, 1], uint_contents=[0, 1, 2, 255]), 4)
    assert one.reshape(-1).tolist() == [0, 1, 2, 255]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (kpb.ModelInferRequest(), r"got inputs \[\]: send exactly one of 'image'"),
        (request("logits", "FP32", [1], b"\0" * 4), "got inputs \\['logits'\\]"),
        (request("image", "UINT8", [1], b"\0"), "'image' must be BYTES, got UINT8"),
        (request("image", "BYTES", [1], b"\x10\0\0\0ab"), "not a well-formed BYTES tensor"),
        (
            request("image", "BYTES", [3], serialize_byte_tensor(np.array([PNG], object)).item()),
            "needs 3 elements, got 1",
        ),
        (
            request(
                "image", "BYTES", [5], serialize_byte_tensor(np.array([PNG] * 5, object)).item()
            ),
            r"batch of 5 images: send 1 to 4 \(max_batch\)",
        ),
        (request("pixels", "UINT8", [2, 4, 4, 1], b"\0" * 20), "needs 32 bytes, got 20"),
        (request("pixels", "UINT8", [4, 4, 2], b"\0" * 32), "2 channels"),
        (request("pixels", "UINT8", [1], uint_contents=[256]), "above 255"),
        (request("pixels", "UINT8", [1, 1, 1, 1, 1], b"\0"), "expected \\[N, H, W, C\\]"),
        (extra_raw_contents(), "2 raw_input_contents for 1 input"),
    ],
)
def test_malformed_requests_say_what_is_wrong(message, expected):
    with pytest.raises(InvalidImage, match=expected):
        images_of(message, max_batch=4)


def test_requested_outputs_and_classification():
    message = kpb.ModelInferRequest()
    assert requested_outputs(message) == {
        "probabilities": 0,
        "top1": 0,
        "edge_confidence": 0,
        "tier": 0,
    }
    message.outputs.add(name="probabilities").parameters["classification"].int64_param = 3
    message.outputs.add(name="top1")
    assert requested_outputs(message) == {"probabilities": 3, "top1": 0}
    message.outputs.add(name="logits")
    with pytest.raises(InvalidImage, match="unknown output 'logits'"):
        requested_outputs(message)


@pytest.mark.parametrize(
    ("field", "value"),
    [("string_param", "3"), ("double_param", 3.0), ("bool_param", True), ("int64_param", -1)],
)
def test_a_classification_count_that_is_not_a_whole_number_is_refused(field, value):
    """Issue 12 item 7: a string `classification` was taken as no classification."""
    message = kpb.ModelInferRequest()
    setattr(message.outputs.add(name="probabilities").parameters["classification"], field, value)
    with pytest.raises(InvalidImage, match="'classification' must be an integer number"):
        requested_outputs(message)


def test_in_flight_limit_refuses_past_its_maximum_and_frees_slots():
    limit = InFlightLimit(2)
    with limit.admit(), limit.admit():
        assert limit.current == 2
        with pytest.raises(Overloaded, match="2 requests already in flight"), limit.admit():
            pass
        assert limit.current == 2
    assert limit.current == 0
    with limit.admit():
        assert limit.current == 1


def test_a_stream_frame_waits_for_room_where_a_unary_call_is_refused():
    """Issue 12 item 5: frames of streams within their window were refused past max_in_flight."""
    limit = InFlightLimit(1)
    admitted: list[str] = []

    async def frame(name: str) -> None:
        await limit.room()
        with limit.admit():
            admitted.append(name)
            await asyncio.sleep(0.01)

    async def main() -> None:
        with limit.admit():
            waiting = [asyncio.create_task(frame(str(i))) for i in range(3)]
            await asyncio.sleep(0.01)
            assert admitted == [] and limit.current == 1
            with pytest.raises(Overloaded), limit.admit():  # a unary call is still refused
                pass
        await asyncio.gather(*waiting)

    asyncio.run(main())
    assert admitted == ["0", "1", "2"] and limit.current == 0


def test_a_waiting_frame_that_is_cancelled_passes_its_turn_on():
    limit = InFlightLimit(1)

    async def main() -> None:
        with limit.admit():
            first = asyncio.create_task(limit.room())
            second = asyncio.create_task(limit.room())
            await asyncio.sleep(0)
        first.cancel()  # woken for the freed slot, then cancelled
        await asyncio.wait_for(second, 1)

    asyncio.run(main())


def test_a_degraded_answer_carries_its_reason_as_text():
    """Found by tests/reliability: every degraded KServe answer (any escalation with no cloud)
    was INTERNAL, the reason being a DegradedReason where the parameter types are looked up."""
    pair = manifest()
    service = KServeService(SimpleNamespace(settings=SimpleNamespace(family=pair.family)))
    answers = Answers(
        pair,
        probabilities=np.array([[0.5, 0.3, 0.2]]),
        edge_confidence=np.array([0.5]),
        edge_class_id=np.array([0]),
        escalated=np.array([True]),
        edge_ms=1.0,
        cloud_ms=0.0,
        degraded_reason=DegradedReason.CLOUD_UNAVAILABLE,
        bytes_per_escalation=0,
    )
    response = service._response(kpb.ModelInferRequest(id="7"), answers)
    parameters = response.parameters
    assert parameters["degraded_reason"].string_param == "cloud-unavailable"
    assert parameters["degraded"].bool_param and parameters["tier"].string_param == "edge"
    (tier,) = [i for i, o in enumerate(response.outputs) if o.name == "tier"]
    assert response.outputs[tier].datatype == "BYTES" and list(response.outputs[tier].shape) == [1]
    assert response.raw_output_contents[tier] == b"\x04\x00\x00\x00edge"
