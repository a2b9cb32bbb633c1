"""Probabilities from logits, shared by every tier (the edge's policy, the cloud's family model,
the builds' soft labels)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

Floats = NDArray[np.floating[Any]]


def softmax(logits: Floats) -> Floats:
    """Row-wise softmax of [..., K] logits, numerically stable."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e: Floats = np.exp(z)
    total: Floats = e.sum(axis=-1, keepdims=True)
    return e / total
