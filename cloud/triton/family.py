"""The family model on Triton: the edge agent's KServe model (named after the family, e.g.
"fashion", with its inputs and outputs) answered by the family's cloud model, so that a client
asks the cloud directly by changing only the URL.

`cloud/triton/family_model.py` runs it in Triton's python backend: it takes the request's
encoded images (or raw pixels), decodes and prepares them with the shared preprocessing, asks
the cloud model in the same server (a BLS call) and answers with these tensors. Inputs (send
one): image BYTES [N] encoded JPEG/PNG; pixels UINT8 [N, H, W, C], C in {1, 3}. Outputs:
probabilities FP32 [N, K] (softmax of the cloud logits at temperature 1, as the cascade
computes them: the manifest gives the cloud no temperature), top1 INT32 [N], edge_confidence
FP32 [N] (NaN: no edge model ran), tier BYTES [N] ("cloud"). No response parameters: the
python backend of Triton 2.51 cannot set them (the edge's tier parameter is the tier output).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgecascade.cloud.common.manifest import Preprocessing
from edgecascade.cloud.common.preprocessing import (
    InvalidImage,
    decode_image,
    prepare_batch,
    raw_images,
)
from edgecascade.cloud.common.probabilities import softmax

IMAGE, PIXELS = "image", "pixels"
TIER = "cloud"
PAIR_FILE = "manifest.json"  # the pair a family model version answers for, in its folder

Tensor = tuple[str, str, list[int]]  # name, KServe datatype, shape (batch first)


def tensors(classes: int) -> tuple[list[Tensor], list[Tensor]]:
    """(inputs, outputs) of a family's KServe model, at the edge agent and on Triton, batch
    first; the model metadata and config both say these (config: max_batch_size 0, the batch
    in `dims`)."""
    inputs = [(IMAGE, "BYTES", [-1]), (PIXELS, "UINT8", [-1, -1, -1, -1])]
    outputs = [
        ("probabilities", "FP32", [-1, classes]),
        ("top1", "INT32", [-1]),
        ("edge_confidence", "FP32", [-1]),
        ("tier", "BYTES", [-1]),
    ]
    return inputs, outputs


def prepared_images(
    image: NDArray[np.object_] | None,
    pixels: NDArray[np.uint8] | None,
    spec: Preprocessing,
    max_batch: int,
) -> NDArray[np.uint8]:
    """The cloud model's input, uint8 [N, size, size, C], from a request's `image` (encoded
    images) or `pixels` (raw [N, H, W, C]) tensor; InvalidImage says what is wrong."""
    if (image is None) == (pixels is None):
        raise InvalidImage(
            f"send exactly one of {IMAGE!r} (BYTES [N], encoded JPEG/PNG) or {PIXELS!r} "
            "(UINT8 [N, H, W, C])"
        )
    sent = image if image is not None else pixels
    assert sent is not None
    if not 1 <= len(sent) <= max_batch:
        raise InvalidImage(f"batch of {len(sent)} images: send 1 to {max_batch} (max_batch)")
    if image is not None:
        return prepare_batch([decode_image(bytes(data)) for data in image.ravel()], spec)
    return prepare_batch(raw_images(sent.shape, sent.tobytes()), spec)


def answer(logits: NDArray[np.floating[Any]]) -> dict[str, NDArray[Any]]:
    """The output tensors for the cloud model's logits [N, K], by name."""
    probabilities = softmax(np.asarray(logits, np.float64)).astype(np.float32)
    n = len(probabilities)
    return {
        "probabilities": probabilities,
        "top1": probabilities.argmax(axis=1).astype(np.int32),
        "edge_confidence": np.full(n, np.nan, np.float32),
        "tier": np.array([TIER.encode()] * n, dtype=np.object_),
    }
