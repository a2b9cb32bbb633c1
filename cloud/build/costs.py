"""What an edge model costs: multiply-accumulates per image, counted on its OpenVINO graph, and
single-image latency, measured with the models under comparison interleaved (so that a shared
machine's load falls on all of them alike)."""

from __future__ import annotations

import time
from math import prod

import numpy as np
import openvino as ov
from numpy.typing import NDArray

from edgecascade.cloud.common.manifest import INPUT_NAME

LATENCY_ITERATIONS = 300
WARMUP_ITERATIONS = 20


def macs_per_image(model: ov.Model, image_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one [H, W, C] image through `model`: its convolutions and matrix
    products (everything else is a rounding error next to them)."""
    model = model.clone()
    model.reshape({INPUT_NAME: [1, *image_shape]})
    total = 0
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind not in ("Convolution", "GroupConvolution", "MatMul"):
            continue
        outputs = prod(op.get_output_shape(0))
        if kind == "Convolution":  # weights [C_out, C_in, kh, kw]
            total += outputs * prod(op.input_value(1).get_shape()[1:])
        elif kind == "GroupConvolution":  # weights [groups, C_out/g, C_in/g, kh, kw]
            total += outputs * prod(op.input_value(1).get_shape()[2:])
        else:
            a = op.input_value(0).get_shape()
            transposed = op.get_attributes().get("transpose_a", False)
            total += outputs * a[-2 if transposed else -1]
    return total


def member(model: ov.Model, index: int) -> ov.Model:
    """Member `index` alone of an ensemble graph (members' logits stacked into [N, members, K],
    as cloud/build/families/fashion_train.py exports them): what one member costs to run. A
    model of one member ([N, 1, K], its stacking folded away) is its own member 0."""
    shape = model.outputs[0].get_partial_shape()
    if index == 0 and shape.rank.get_length() == 3 and shape[1].get_length() == 1:
        return model
    stack = model.get_results()[0].input_value(0).get_node()
    if stack.get_type_name() != "Concat":
        raise ValueError(f"{model.get_friendly_name()} is not an ensemble of stacked members")
    logits = stack.input_value(index).get_node().input_value(0)  # before its Unsqueeze
    return ov.Model([logits], model.get_parameters(), f"member{index}")


def latency_request(
    core: ov.Core, model: ov.Model, batch: NDArray[np.uint8], config: dict[str, str]
) -> ov.InferRequest:
    """A compiled request of `model` for exactly `batch` ([n, H, W, C]), warmed up."""
    model = model.clone()
    model.reshape({INPUT_NAME: list(batch.shape)})
    compiled = core.compile_model(model, "CPU", {**config, "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    request.set_input_tensor(ov.Tensor(np.ascontiguousarray(batch)))
    for _ in range(WARMUP_ITERATIONS):
        request.infer()
    return request


def interleaved_p50_ms(
    requests: dict[str, ov.InferRequest], iterations: int = LATENCY_ITERATIONS
) -> dict[str, float]:
    """Median latency of each request, running them in turn `iterations` times."""
    times: dict[str, list[float]] = {key: [] for key in requests}
    for _ in range(iterations):
        for key, request in requests.items():
            start = time.perf_counter()
            request.infer()
            times[key].append((time.perf_counter() - start) * 1e3)
    return {key: round(float(np.median(values)), 4) for key, values in times.items()}
