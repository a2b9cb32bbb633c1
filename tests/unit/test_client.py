"""edgecascade.client without a server: the caller's arguments are checked before any call,
answers and statuses map to typed results, every failed call is a CascadeError."""

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
import pytest

from edgecascade.client import (
    CascadeClient,
    CascadeError,
    DegradedReason,
    ModelVersions,
    Prediction,
    Tier,
    Timings,
    _calls,
    aio,
)
from edgecascade.client.results import classify_result, status
from edgecascade.cloud.common.ports import free_port
from edgecascade.v1 import cascade_pb2 as pb

PIXELS = np.arange(28 * 28, dtype=np.uint32).astype(np.uint8).reshape(28, 28)
TOKEN = "t0ken-made-by-auth-add-token"


@pytest.fixture
def nowhere() -> str:
    """An address no server listens on: a call that got that far fails UNAVAILABLE."""
    return f"127.0.0.1:{free_port()}"


BAD_CALLS: list[tuple[str, Callable[[CascadeClient], Any], type[Exception], str]] = [
    ("float pixels", lambda c: c.classify(PIXELS.astype(np.float32)), ValueError, "uint8"),
    ("two images", lambda c: c.classify(np.stack([PIXELS, PIXELS])[..., None]), ValueError, "one"),
    ("four channels", lambda c: c.classify(np.zeros((8, 8, 4), np.uint8)), ValueError, "C 1 or 3"),
    ("a vector", lambda c: c.classify(np.zeros(8, np.uint8)), ValueError, "HW, HWC or NHWC"),
    ("no pixels", lambda c: c.classify(np.zeros((0, 8), np.uint8)), ValueError, "no pixels"),
    ("empty bytes", lambda c: c.classify(b""), ValueError, "empty"),
    ("a path", lambda c: c.classify("frame.png"), TypeError, "bytes or a numpy array"),
    ("negative top_k", lambda c: c.classify(b"png", top_k=-1), ValueError, "top_k"),
    ("huge top_k", lambda c: c.classify(b"png", top_k=2**32), ValueError, "top_k"),
    ("zero deadline", lambda c: c.classify(b"png", deadline_ms=0), ValueError, "deadline_ms"),
    (
        "nan deadline",
        lambda c: c.classify(b"png", deadline_ms=float("nan")),
        ValueError,
        "deadline",
    ),
    ("zero timeout", lambda c: c.classify(b"png", client_timeout=0), ValueError, "client_timeout"),
    ("status timeout", lambda c: c.status(client_timeout=-1), ValueError, "client_timeout"),
    ("stream window", lambda c: c.classify_stream([b"png"], window=0), ValueError, "window"),
    ("stream top_k", lambda c: c.classify_stream([b"png"], top_k=-2), ValueError, "top_k"),
    (
        "stream timeout",
        lambda c: c.classify_stream([b"png"], client_timeout=0),
        ValueError,
        "client",
    ),
]


@pytest.mark.parametrize(("case", "call", "kind", "says"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_arguments_raise_before_any_call(
    nowhere: str, case: str, call: Callable[[CascadeClient], Any], kind: type[Exception], says: str
) -> None:
    with CascadeClient(nowhere) as client, pytest.raises(kind, match=says):
        call(client)  # a stream raises here, before it is iterated


def test_asyncio_calls_check_their_arguments_before_any_call(nowhere: str) -> None:
    async def main() -> None:
        async with aio.CascadeClient(nowhere) as client:
            with pytest.raises(ValueError, match="top_k"):
                await client.classify(PIXELS, top_k=-1)
            with pytest.raises(ValueError, match="window"):
                client.classify_stream([PIXELS], window=0)
            with pytest.raises(ValueError, match="client_timeout"):
                await client.status(client_timeout=0)

    asyncio.run(main())


def test_a_token_that_is_not_a_bearer_token_is_refused(nowhere: str) -> None:
    with pytest.raises(ValueError, match="token"):
        CascadeClient(nowhere, token="Bearer " + TOKEN)
    assert _calls.transport(None, TOKEN).metadata == (("authorization", f"Bearer {TOKEN}"),)
    assert _calls.transport(None, None).metadata == ()


@pytest.mark.parametrize(
    ("pixels", "shape"),
    [(PIXELS, [28, 28]), (PIXELS[..., None], [28, 28, 1]), (PIXELS[None, ..., None], [28, 28, 1])],
)
def test_pixels_travel_as_a_raw_image_without_n(pixels: np.ndarray, shape: list[int]) -> None:
    message = _calls.request(pixels, top_k=3, deadline_ms=20.0, request_id="a")
    assert message.WhichOneof("input") == "raw_image"
    assert list(message.raw_image.shape) == shape
    assert message.raw_image.data == PIXELS.tobytes()
    assert (message.top_k, message.deadline_ms, message.request_id) == (3, 20.0, "a")


def test_a_strided_view_is_sent_as_the_pixels_it_shows() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    view = rgb[::2, ::-1]
    message = _calls.request(view, top_k=0, deadline_ms=None, request_id="")
    assert list(message.raw_image.shape) == [5, 12, 3]
    assert message.raw_image.data == np.ascontiguousarray(view).tobytes()
    assert message.deadline_ms == 0  # none


def test_encoded_bytes_travel_as_they_are() -> None:
    message = _calls.request(b"\x89PNG...", top_k=0, deadline_ms=None, request_id="")
    assert message.WhichOneof("input") == "encoded_image" and message.encoded_image == b"\x89PNG..."


def test_a_stream_numbers_its_frames_under_one_id_of_its_own() -> None:
    first, second = _calls.requests(1, None), _calls.requests(1, None)
    ids = [first(b"png").request_id.rsplit("-", 1) for _ in range(3)]
    other, _ = second(b"png").request_id.rsplit("-", 1)
    assert [number for _, number in ids] == ["0", "1", "2"]
    assert len({stream for stream, _ in ids}) == 1 and other != ids[0][0]


VERSIONS = pb.ModelVersions(family="fashion", edge="fashion_edge:2", cloud="fashion_cloud:3")


def test_an_escalated_answer_maps_to_a_typed_result() -> None:
    response = pb.ClassifyResponse(
        request_id="r1",
        top_k=[pb.Prediction(class_id=7, name="Sneaker", score=0.75), pb.Prediction(class_id=5)],
        tier=pb.CLOUD,
        edge_confidence=0.5,
        edge_class_id=5,
        versions=VERSIONS,
        timings=pb.Timings(edge_ms=1.0, cloud_ms=2.0, total_ms=3.5),
    )
    result = classify_result(response)
    assert (result.class_id, result.name, result.score) == (7, "Sneaker", 0.75)
    assert result.top_k[1] == Prediction(5, "", 0.0)
    assert result.tier is Tier.CLOUD and result.edge_class_id == 5 and result.edge_confidence == 0.5
    assert result.versions == ModelVersions("fashion", "fashion_edge:2", "fashion_cloud:3")
    assert result.timings == Timings(1.0, 2.0, 3.5)
    assert not result.degraded and result.degraded_reason is None and result.error is None
    assert result.request_id == "r1"


@pytest.mark.parametrize("reason", list(DegradedReason))
def test_every_degraded_reason_maps_from_its_wire_code(reason: DegradedReason) -> None:
    code = pb.DegradedReason.Value(reason.name)
    response = pb.ClassifyResponse(
        top_k=[pb.Prediction(class_id=1)],
        tier=pb.EDGE,
        degraded=True,
        degraded_reason=reason.value,
        degraded_reason_code=code,
    )
    result = classify_result(response)
    assert result.tier is Tier.EDGE and result.degraded and result.degraded_reason is reason


def test_the_enums_name_every_value_the_wire_has() -> None:
    assert {r.name for r in DegradedReason} | {"DEGRADED_REASON_UNSPECIFIED"} == set(
        pb.DegradedReason.keys()
    )
    assert {t.name for t in Tier} | {"TIER_UNSPECIFIED"} == set(pb.Tier.keys())


def test_a_failed_frame_is_a_result_whose_answer_raises_its_error() -> None:
    response = pb.ClassifyResponse(
        request_id="s-3",
        versions=VERSIONS,
        error=pb.Error(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message="not an image"),
    )
    result = classify_result(response)
    assert result.error is not None and result.tier is None and result.top_k == ()
    assert (result.error.code, result.error.message) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "not an image",
    )
    assert str(result.error) == "[INVALID_ARGUMENT] not an image"
    with pytest.raises(CascadeError, match="not an image"):
        _ = result.class_id
    assert CascadeError.from_frame(pb.Error(code=99, message="?")).code is grpc.StatusCode.UNKNOWN


# A value for every field of GetStatus's repeated messages (a new field fails the mapping).
MESSAGES: dict[str, dict[str, Any]] = {
    "audit": {
        "family": "fashion",
        "edge_version": "fashion_edge:2",
        "audited": 40,
        "agreed": 39,
        "agreement": 0.975,
        "lower": 0.87,
        "upper": 0.996,
        "below_bound": True,
    },
    "batches": {"size": 8, "executions": 3},
}


def test_every_status_field_is_mapped() -> None:
    response = pb.GetStatusResponse(versions=VERSIONS)
    for number, field in enumerate(response.DESCRIPTOR.fields, start=1):
        if field.label == field.LABEL_REPEATED and field.type == field.TYPE_MESSAGE:
            getattr(response, field.name).add(**MESSAGES[field.name])
        elif field.label == field.LABEL_REPEATED:
            getattr(response, field.name).append(f"{field.name}!")
        elif field.type == field.TYPE_STRING:
            setattr(response, field.name, f"{field.name}!")
        elif field.type == field.TYPE_BOOL:
            setattr(response, field.name, True)
        elif field.type != field.TYPE_MESSAGE:
            setattr(response, field.name, number)
    mapped = status(response)
    assert mapped.versions == ModelVersions("fashion", "fashion_edge:2", "fashion_cloud:3")
    for field in response.DESCRIPTOR.fields:
        if field.name != "versions":
            value = getattr(response, field.name)
            if field.name in MESSAGES:  # one message, mapped field by field
                (entry,) = getattr(mapped, field.name)
                assert dataclasses.asdict(entry) == MESSAGES[field.name], field.name
                continue
            expected = tuple(value) if field.label == field.LABEL_REPEATED else value
            assert getattr(mapped, field.name) == expected, field.name


def test_every_blocking_call_that_fails_raises_cascade_error(nowhere: str) -> None:
    with CascadeClient(nowhere) as client:
        calls: list[Callable[[], Any]] = [
            lambda: client.classify(PIXELS, client_timeout=5),
            lambda: list(client.classify_stream([PIXELS], client_timeout=5)),
            lambda: client.status(client_timeout=5),
        ]
        for call in calls:
            with pytest.raises(CascadeError) as failed:
                call()
            assert failed.value.code is grpc.StatusCode.UNAVAILABLE and failed.value.message


def test_every_asyncio_call_that_fails_raises_cascade_error(nowhere: str) -> None:
    async def main() -> list[CascadeError]:
        failures = []
        async with aio.CascadeClient(nowhere) as client:
            for call in (
                lambda: client.classify(PIXELS, client_timeout=5),
                lambda: client.status(client_timeout=5),
            ):
                with pytest.raises(CascadeError) as failed:
                    await call()
                failures.append(failed.value)
            with pytest.raises(CascadeError) as failed:
                [r async for r in client.classify_stream([PIXELS], client_timeout=5)]
            failures.append(failed.value)
        return failures

    assert [e.code for e in asyncio.run(main())] == [grpc.StatusCode.UNAVAILABLE] * 3
