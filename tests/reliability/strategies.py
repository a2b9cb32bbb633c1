"""Hypothesis strategies for what a careless or hostile client sends an edge agent: image bytes
(valid, with PNG/JPEG headers, chunks and dimensions altered, truncated, flipped, random) and the
messages of every RPC. Message strategies draw (classes, message): the kinds of input in it, under
which the report counts the codes returned."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import cv2
import numpy as np
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as kpb
from tritonclient.utils import serialize_byte_tensor

from edgecascade.cloud.common.preprocessing import PNG_SIGNATURE
from edgecascade.v1 import cascade_pb2 as pb

Drawn = tuple[list[str], Any]

# Dimensions and counts where code tends to break: zero, one, the model's size, powers of two
# around integer widths, the largest values of the wire types.
EDGE_INTS = [0, 1, 2, 3, 4, 27, 28, 29, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1, 2**32]
U32 = st.one_of(st.sampled_from(EDGE_INTS[:-1]), st.integers(0, 2**32 - 1))


@st.composite
def pixels(draw: st.DrawFn) -> np.ndarray:
    """A small uint8 image: gray [H, W] or colour [H, W, 3]."""
    h, w = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    shape = (h, w) if draw(st.booleans()) else (h, w, 3)
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def encoded(image: np.ndarray, kind: str) -> bytes:
    return cv2.imencode(f".{kind}", image)[1].tobytes()


def png_chunks(data: bytes) -> list[tuple[int, bytes]]:
    """(offset, type) of each chunk of a PNG written by cv2."""
    chunks, at = [], len(PNG_SIGNATURE)
    while at + 8 <= len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        chunks.append((at, data[at + 4 : at + 8]))
        at += 12 + length
    return chunks


@st.composite
def png_header(draw: st.DrawFn) -> bytes:
    """A PNG whose IHDR declares other dimensions, bit depth or colour type (CRC fixed or not)."""
    data = bytearray(encoded(draw(pixels()), "png"))
    ihdr = bytearray(data[16:29])
    struct.pack_into(">II", ihdr, 0, draw(U32), draw(U32))
    if draw(st.booleans()):
        ihdr[8] = draw(st.sampled_from([0, 1, 2, 4, 8, 16, 255]))  # bit depth
        ihdr[9] = draw(st.sampled_from([0, 1, 2, 3, 4, 6, 7, 255]))  # colour type
    data[16:29] = ihdr
    if draw(st.booleans()):
        data[29:33] = struct.pack(">I", zlib.crc32(data[12:29]))
    return bytes(data)


@st.composite
def png_chunk(draw: st.DrawFn) -> bytes:
    """A PNG with one chunk's declared length altered (up to 4 GiB), or an extra chunk of any
    type and length, possibly cut short."""
    data = bytearray(encoded(draw(pixels()), "png"))
    if draw(st.booleans()):
        at, _ = draw(st.sampled_from(png_chunks(bytes(data))))
        data[at : at + 4] = struct.pack(">I", draw(U32))
    else:
        kind = draw(st.sampled_from([b"IDAT", b"tEXt", b"zTXt", b"iCCP", b"IEND", b"abcd"]))
        body = draw(st.binary(max_size=64))
        length = draw(st.one_of(st.just(len(body)), U32))
        chunk = struct.pack(">I", length) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        data[33:33] = chunk  # right after IHDR
    return bytes(data[: draw(st.integers(len(PNG_SIGNATURE), len(data)))])


@st.composite
def jpeg_header(draw: st.DrawFn) -> bytes:
    """A JPEG whose frame header (SOF) declares other dimensions or component counts."""
    data = bytearray(encoded(draw(pixels()), "jpg"))
    at = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, at + 5, draw(st.integers(0, 65535)), draw(st.integers(0, 65535)))
    if draw(st.booleans()):
        data[at + 9] = draw(st.sampled_from([0, 1, 2, 3, 4, 255]))
    return bytes(data)


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A valid PNG or JPEG cut short or with bytes overwritten."""
    data = bytearray(encoded(draw(pixels()), draw(st.sampled_from(["png", "jpg"]))))
    for _ in range(draw(st.integers(0, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))])


def image_bytes() -> st.SearchStrategy[tuple[str, bytes]]:
    return st.one_of(
        pixels().map(lambda image: ("image-valid-png", encoded(image, "png"))),
        pixels().map(lambda image: ("image-valid-jpeg", encoded(image, "jpg"))),
        png_header().map(lambda data: ("image-png-header", data)),
        png_chunk().map(lambda data: ("image-png-chunk", data)),
        jpeg_header().map(lambda data: ("image-jpeg-header", data)),
        damaged().map(lambda data: ("image-damaged", data)),
        st.binary(max_size=256).map(lambda data: ("image-random-bytes", data)),
        st.binary(max_size=64).map(lambda data: ("image-signature-only", PNG_SIGNATURE + data)),
    )


IMAGE_SHAPES = st.tuples(st.integers(1, 48), st.integers(1, 48), st.sampled_from([[], [1], [3]]))
SHAPES = st.one_of(
    IMAGE_SHAPES.map(lambda s: [s[0], s[1], *s[2]]),  # [H, W] or [H, W, C] that can be valid
    st.lists(st.one_of(st.sampled_from(EDGE_INTS + [-1, 2**63 - 1]), st.integers(-4, 64))),
)


@st.composite
def raw_pixels(draw: st.DrawFn) -> tuple[str, list[int], bytes]:
    """A shape (any rank, any values) and bytes: as many as the shape needs when that is small,
    else any."""
    shape = draw(SHAPES.filter(lambda s: len(s) <= 5))
    needed = int(np.prod(shape, dtype=object)) if shape else 0
    if 0 <= needed <= 64 * 64 * 3 and draw(st.booleans()):
        return "raw-matching", shape, draw(st.binary(min_size=needed, max_size=needed))
    return "raw-mismatched", shape, draw(st.binary(max_size=256))


# none half the time, a sensible budget or any double (NaN, infinities, negatives) otherwise
BUDGETS = st.one_of(st.just(0.0), st.just(0.0), st.floats(0.01, 5000), st.floats(allow_nan=True))


@st.composite
def classify_request(draw: st.DrawFn) -> Drawn:
    request = pb.ClassifyRequest(
        request_id=draw(st.text(max_size=8)),
        top_k=draw(st.one_of(st.just(0), st.integers(0, 2**32 - 1))),
    )
    kind = draw(st.sampled_from(["encoded", "raw", "none"]))
    if kind == "encoded":
        cls, data = draw(image_bytes())
        request.encoded_image = data
    elif kind == "raw":
        cls, shape, data = draw(raw_pixels())
        request.raw_image.shape.extend(s for s in shape if -(2**63) <= s < 2**63)
        request.raw_image.data = data
    else:
        cls = "no-input"
    budget = draw(BUDGETS)
    request.deadline_ms = budget
    classes = [cls]
    if budget != 0:
        classes.append("budget" if np.isfinite(budget) and budget > 0 else "bad-budget")
    return classes, request


def bytes_tensor(elements: list[bytes]) -> bytes:
    if not elements:
        return b""
    return bytes(serialize_byte_tensor(np.array(elements, dtype=object)).item())


@st.composite
def valid_model_infer_request(draw: st.DrawFn) -> Drawn:
    """A request the agent answers: 1-4 images, encoded or as one pixels tensor, and the
    outputs all, some, or with a class count."""
    request = kpb.ModelInferRequest(model_name="fashion", id=draw(st.text(max_size=8)))
    images = draw(st.lists(pixels(), min_size=1, max_size=4))
    if draw(st.booleans()):
        kind = draw(st.sampled_from(["png", "jpg"]))
        request.inputs.add(name="image", datatype="BYTES", shape=[len(images)])
        request.raw_input_contents.append(bytes_tensor([encoded(i, kind) for i in images]))
        classes = [f"valid-image-{kind}"]
    else:
        batch = np.stack([np.resize(i, images[0].shape) for i in images])
        batch = batch if batch.ndim == 4 else batch[..., None]
        request.inputs.add(name="pixels", datatype="UINT8", shape=list(batch.shape))
        request.raw_input_contents.append(batch.tobytes())
        classes = ["valid-pixels"]
    for name in draw(st.lists(st.sampled_from(["probabilities", "top1", "edge_confidence"]))):
        output = request.outputs.add(name=name)
        if name == "probabilities" and draw(st.booleans()):
            output.parameters["classification"].int64_param = draw(st.integers(0, 12))
            classes.append("valid-classification")
    return classes, request


@st.composite
def model_infer_request(draw: st.DrawFn) -> Drawn:
    """A valid request a quarter of the time, else anything (see fuzzed_model_infer_request)."""
    if draw(st.integers(0, 3)) == 0:
        return draw(valid_model_infer_request())
    return draw(fuzzed_model_infer_request())


@st.composite
def fuzzed_model_infer_request(draw: st.DrawFn) -> Drawn:
    """A KServe request: model and version, 0-2 inputs of any name, type and shape, raw contents
    that fit them or not, outputs with classification parameters of any kind."""
    usual = draw(st.integers(0, 3)) > 0  # the model served, one input, nothing extra
    request = kpb.ModelInferRequest(
        model_name="fashion" if usual else draw(st.sampled_from(["fashion", "", "imagenet"])),
        model_version="" if usual else draw(st.sampled_from(["", "1", "0", "x", "-1"])),
        id=draw(st.text(max_size=8)),
    )
    classes = []
    for _ in range(1 if usual else draw(st.integers(0, 2))):
        name = draw(st.sampled_from(["image", "pixels"] * 3 + ["logits"]))
        typed = {"image": "BYTES", "pixels": "UINT8"}.get(name, "FP32")
        datatype = draw(st.sampled_from([typed] * 5 + ["BYTES", "UINT8", "FP32", "INT64", ""]))
        tensor = request.inputs.add(name=name, datatype=datatype)
        if name == "image" and draw(st.integers(0, 3)) > 0:
            images = draw(st.lists(image_bytes(), min_size=0, max_size=4))
            tensor.shape.append(len(images) if draw(st.booleans()) else draw(st.integers(-2, 40)))
            request.raw_input_contents.append(bytes_tensor([data for _, data in images]))
            classes.extend(c for c, _ in images)
        else:
            cls, shape, data = draw(raw_pixels())
            tensor.shape.extend(s for s in shape if -(2**63) <= s < 2**63)
            if draw(st.booleans()):
                request.raw_input_contents.append(data)
            else:
                tensor.contents.uint_contents.extend(
                    draw(st.lists(st.integers(0, 300), max_size=16))
                )
            classes.append(f"{name}:{cls}")
    for _ in range(0 if usual else draw(st.integers(0, 2))):  # raw contents for no input
        request.raw_input_contents.append(draw(st.binary(max_size=32)))
        classes.append("extra-raw-contents")
    for _ in range(draw(st.sampled_from([0, 0, 1, 2, 3]))):
        output = request.outputs.add(
            name=draw(st.sampled_from(["probabilities", "top1", "edge_confidence", "logits"]))
        )
        if draw(st.booleans()):
            parameter = output.parameters["classification"]
            choice = draw(st.sampled_from(["int64", "uint64", "string", "double", "bool"]))
            if choice == "int64":
                parameter.int64_param = draw(st.integers(-(2**63), 2**63 - 1))
            elif choice == "uint64":
                parameter.uint64_param = draw(st.integers(0, 2**64 - 1))
            elif choice == "string":
                parameter.string_param = draw(st.text(max_size=4))
            elif choice == "double":
                parameter.double_param = draw(st.floats(allow_nan=True))
            else:
                parameter.bool_param = draw(st.booleans())
            classes.append(f"classification:{choice}")
    if request.model_name != "fashion" or request.model_version not in ("", "1"):
        classes.append("other-model-or-version")
    return sorted(set(classes)) or ["no-input"], request
