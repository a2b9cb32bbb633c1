"""The REST face's mapping between Triton's HTTP/JSON and the KServe protobuf messages (no
server): what tritonclient.http writes becomes the gRPC request, the answer becomes Triton's
JSON or binary tensors."""

import asyncio
import gzip
import json
import zlib

import numpy as np
import pytest
import tritonclient.http as httpclient
from starlette.requests import Request
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as kpb
from tritonclient.utils import serialize_byte_tensor

from edgecascade.cloud.common.errors import InvalidInput
from edgecascade.cloud.common.kserve_rest import (
    HEADER_LENGTH,
    BodyTooLarge,
    as_json,
    infer_request,
    infer_response,
    read_body,
)


def tritonclient_body(inputs, outputs=None, request_id=""):
    """The body and Inference-Header-Content-Length tritonclient.http sends."""
    body, length = httpclient.InferenceServerClient.generate_request_body(
        inputs, outputs, request_id
    )
    return body if isinstance(body, bytes) else body.encode(), length


def test_binary_and_json_inputs_become_the_grpc_request():
    pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3, 1)
    binary = httpclient.InferInput("pixels", list(pixels.shape), "UINT8")
    binary.set_data_from_numpy(pixels)
    body, length = tritonclient_body([binary], request_id="7")
    request, outputs = infer_request(body, str(length), "fashion", "1")
    assert (request.model_name, request.model_version, request.id) == ("fashion", "1", "7")
    assert list(request.inputs[0].shape) == [2, 3, 3, 1] and request.inputs[0].datatype == "UINT8"
    assert request.raw_input_contents == [pixels.tobytes()]
    assert outputs is None  # tritonclient asks for every output as binary when it names none

    as_text = httpclient.InferInput("pixels", list(pixels.shape), "UINT8")
    as_text.set_data_from_numpy(pixels, binary_data=False)
    wanted = [
        httpclient.InferRequestedOutput("top1", binary_data=False),
        httpclient.InferRequestedOutput("probabilities", class_count=3),
    ]
    body, length = tritonclient_body([as_text], wanted)
    assert length is None
    request, outputs = infer_request(body, None, "fashion", "")
    assert list(request.inputs[0].contents.uint_contents) == pixels.reshape(-1).tolist()
    assert not request.raw_input_contents and outputs == {"probabilities"}
    assert [o.name for o in request.outputs] == ["top1", "probabilities"]
    assert request.outputs[1].parameters["classification"].int64_param == 3


def test_json_strings_are_bytes_elements():
    header = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2], "data": ["ab", "c"]}]}
    request, _ = infer_request(json.dumps(header).encode(), None, "fashion", "")
    assert list(request.inputs[0].contents.bytes_contents) == [b"ab", b"c"]


OVERRUN = (
    b'{"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [4], '
    b'"parameters": {"binary_data_size": 8}}]}'
)


@pytest.mark.parametrize(
    ("body", "length", "expected"),
    [
        (b"{oops", None, "JSONDecodeError"),
        (b"[]", None, "not a JSON object"),
        (b'{"inputs": [{"name": "image"}]}', None, "KeyError: 'datatype'"),
        (b"{}", "99", "not within the body"),
        (OVERRUN + b"\0" * 4, str(len(OVERRUN)), "overruns the body"),
        (b'{"inputs": []}' + b"\0\0", "14", "2 bytes after the binary inputs"),
        (
            b'{"inputs": [{"name": "x", "datatype": "COMPLEX", "shape": [1], "data": [1]}]}',
            None,
            "unknown datatype COMPLEX",
        ),
        (b'{"outputs": [{"name": "top1", "parameters": {"k": [1]}}]}', None, "a parameter is"),
    ],
)
def test_malformed_http_requests_say_what_is_wrong(body: bytes, length, expected: str):
    with pytest.raises(InvalidInput, match=expected):
        infer_request(body, length, "fashion", "")


def response() -> kpb.ModelInferResponse:
    message = kpb.ModelInferResponse(model_name="fashion", model_version="2", id="7")
    message.outputs.add(name="top1", datatype="INT32", shape=[2])
    message.raw_output_contents.append(np.array([3, 1], np.int32).tobytes())
    message.outputs.add(name="tier", datatype="BYTES", shape=[2])
    message.raw_output_contents.append(serialize_byte_tensor(np.array([b"edge", b"cloud"])).item())
    message.parameters["degraded"].bool_param = False
    message.parameters["edge_confidence"].double_param = 0.5
    return message


def test_the_answer_as_json_or_binary_tensors_reads_back_in_tritonclient():
    as_text = infer_response(response(), set())
    result = httpclient.InferResult.from_response_body(as_text.body)
    assert result.as_numpy("top1").tolist() == [3, 1]
    assert result.as_numpy("tier").tolist() == ["edge", "cloud"]
    assert result.get_response()["parameters"] == {"degraded": False, "edge_confidence": 0.5}
    assert result.get_response()["id"] == "7"

    binary = infer_response(response(), None)
    length = int(binary.headers[HEADER_LENGTH])
    result = httpclient.InferResult.from_response_body(binary.body, header_length=length)
    assert result.as_numpy("top1").tolist() == [3, 1]
    assert result.as_numpy("tier").tolist() == [b"edge", b"cloud"]


def test_protobuf_json_has_triton_numbers_and_every_field():
    config = mc.ModelConfig(name="fashion", max_batch_size=0)
    config.input.add(name="image", data_type=mc.TYPE_STRING, dims=[-1])
    config.parameters["max_batch"].string_value = "32"
    data = as_json(config)
    assert data["input"][0]["dims"] == [-1] and data["max_batch_size"] == 0
    assert data["input"][0]["data_type"] == "TYPE_STRING" and data["input"][0]["optional"] is False
    assert data["parameters"] == {"max_batch": {"string_value": "32"}}
    stats = kpb.ModelStatisticsResponse()
    stats.model_stats.add(name="fashion", version="1", inference_count=2**40)
    stats.model_stats[0].inference_stats.success.ns = 5
    (entry,) = as_json(stats)["model_stats"]
    assert entry["inference_count"] == 2**40 and entry["execution_count"] == 0
    assert entry["inference_stats"]["success"] == {"count": 0, "ns": 5}


def read(body: bytes, limit: int = 1000, encoding: str | None = None) -> bytes:
    """read_body of a request carrying `body` in two chunks (no server)."""
    chunks = [body[: len(body) // 2], body[len(body) // 2 :]]

    async def receive() -> dict:
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    headers = [(b"content-encoding", encoding.encode())] if encoding else []
    request = Request({"type": "http", "method": "POST", "headers": headers}, receive)
    return asyncio.run(read_body(request, limit))


def test_request_bodies_are_capped_and_decompressed_as_triton_takes_them():
    text = b'{"inputs": []}' * 20
    assert read(text) == text
    assert read(gzip.compress(text), encoding="gzip") == text
    assert read(zlib.compress(text), encoding="deflate") == text
    with pytest.raises(BodyTooLarge, match="over 100 bytes"):
        read(text, limit=100)
    with pytest.raises(BodyTooLarge, match="inflates past 1000 bytes"):
        read(gzip.compress(b"\0" * 100_000), encoding="gzip")  # 100 kB from a 130-byte body
    with pytest.raises(InvalidInput, match="not gzip data"):
        read(b"plain", encoding="gzip")
    with pytest.raises(InvalidInput, match="send gzip, deflate or none"):
        read(text, encoding="br")
