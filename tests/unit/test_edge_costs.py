"""What an edge model costs (cloud/build/costs.py): MACs counted on small OpenVINO graphs whose
count is known by hand, and one member cut out of an ensemble graph."""

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

from edgecascade.cloud.build.costs import (
    interleaved_p50_ms,
    latency_request,
    macs_per_image,
    member,
)
from edgecascade.cloud.common.manifest import INPUT_NAME


def _head(image: ov.Node, channels: int, seed: int) -> ov.Node:
    """conv 3x3 (1 -> channels, same padding) on [N, 8, 8, 1], then a 10-way matrix product."""
    rng = np.random.default_rng(seed)
    x = ops.transpose(ops.convert(image, "f32"), ops.constant(np.array([0, 3, 1, 2])))
    weights = ops.constant(rng.normal(size=(channels, 1, 3, 3)).astype(np.float32))
    conv = ops.convolution(x, weights, [1, 1], [1, 1], [1, 1], [1, 1])
    flat = ops.reshape(conv, ops.constant(np.array([-1, channels * 64])), False)
    dense = ops.constant(rng.normal(size=(channels * 64, 10)).astype(np.float32))
    return ops.matmul(flat, dense, False, False)


def _image() -> ov.Node:
    image = ops.parameter([-1, 8, 8, 1], ov.Type.u8, name=INPUT_NAME)
    image.output(0).get_tensor().set_names({INPUT_NAME})
    return image


def test_macs_are_the_convolutions_and_matrix_products():
    image = _image()
    model = ov.Model([_head(image, 4, 0)], [image])
    # conv: 8 x 8 outputs x 4 channels x 9 taps; matmul: 10 outputs x 256 inputs
    assert macs_per_image(model, (8, 8, 1)) == 8 * 8 * 4 * 9 + 10 * 256


def test_a_member_alone_costs_its_share_and_computes_its_logits():
    image = _image()
    heads = [_head(image, 4, 0), _head(image, 2, 1)]
    stacked = ops.concat([ops.unsqueeze(h, ops.constant(np.array([1]))) for h in heads], 1)
    ensemble = ov.Model([stacked], [image])
    first, second = member(ensemble, 0), member(ensemble, 1)
    assert macs_per_image(first, (8, 8, 1)) == 8 * 8 * 4 * 9 + 10 * 256
    assert macs_per_image(second, (8, 8, 1)) == 8 * 8 * 2 * 9 + 10 * 128
    assert macs_per_image(ensemble, (8, 8, 1)) == sum(
        macs_per_image(m, (8, 8, 1)) for m in (first, second)
    )
    batch = np.random.default_rng(2).integers(0, 255, (3, 8, 8, 1), dtype=np.uint8)
    core = ov.Core()
    f32 = {"INFERENCE_PRECISION_HINT": "f32"}  # this CPU would run bf16
    together = core.compile_model(ensemble, "CPU", f32)(batch)[0]
    alone = core.compile_model(second, "CPU", f32)(batch)[0]
    np.testing.assert_allclose(alone, together[:, 1], rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="not an ensemble"):
        member(first, 0)


def test_a_model_of_one_member_is_its_own_member_0():
    image = _image()
    one = ov.Model([ops.unsqueeze(_head(image, 4, 0), ops.constant(np.array([1])))], [image])
    assert member(one, 0) is one
    with pytest.raises(ValueError, match="not an ensemble"):
        member(one, 1)


def test_interleaved_latency_measures_every_request():
    image = _image()
    core = ov.Core()
    model = ov.Model([_head(image, 4, 0)], [image])
    batch = np.zeros((2, 8, 8, 1), np.uint8)
    requests = {
        "one": latency_request(core, model, batch[:1], {}),
        "two": latency_request(core, model, batch, {}),
    }
    latency = interleaved_p50_ms(requests, iterations=20)
    assert set(latency) == {"one", "two"} and all(ms > 0 for ms in latency.values())
