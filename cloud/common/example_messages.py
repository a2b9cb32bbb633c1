"""Examples on the wire: `ModelSync.UploadExamples`' UploadedExample to and from Example."""

from __future__ import annotations

import numpy as np

from edgecascade.cloud.common.examples import Example
from edgecascade.v1 import model_sync_pb2 as pb


def to_message(edge_id: str, example: Example) -> pb.UploadedExample:
    return pb.UploadedExample(
        edge_id=edge_id,
        sha256=example.sha256,
        family=example.family,
        edge_version=example.edge_version,
        kind=example.kind,
        image_shape=list(example.image.shape),
        image=example.image.tobytes(),
        cloud_probabilities=example.cloud_probabilities.tolist(),
        edge_probabilities=example.edge_probabilities.tolist(),
        seen_at=example.seen_at,
    )


def from_message(message: pb.UploadedExample) -> Example:
    """The example `message` carries; ValueError naming the first malformed field."""
    shape = tuple(message.image_shape)
    if len(shape) != 3 or min(shape) <= 0 or int(np.prod(shape)) != len(message.image):
        raise ValueError(
            f"image_shape {list(shape)}: expected [H, W, C] of the image's {len(message.image)}"
            " bytes"
        )
    example = Example(
        message.sha256,
        message.family,
        message.edge_version,
        message.kind,
        np.frombuffer(message.image, np.uint8).reshape(shape),
        np.asarray(message.cloud_probabilities, np.float32),
        np.asarray(message.edge_probabilities, np.float32),
        message.seen_at,
    )
    example.check()
    return example
