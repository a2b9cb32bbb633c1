"""Escalation policies: a confidence score from the edge logits, compared to a threshold."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cloud.manifest import RoutingPolicy


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of [..., K] logits, numerically stable."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class MaxProbabilityPolicy:
    """Escalate when the edge model's top-1 probability is below `threshold`."""

    threshold: float
    name: str = "max_prob"

    def confidence(self, logits: np.ndarray) -> np.ndarray:
        """Top-1 softmax probability, per row of [..., K] logits."""
        return softmax(np.asarray(logits, np.float64)).max(axis=-1)

    def escalate(self, confidence: float | np.ndarray) -> bool | np.ndarray:
        return confidence < self.threshold


def policy_from_manifest(policy: RoutingPolicy, threshold: float | None = None) -> MaxProbabilityPolicy:
    """The policy a manifest names, optionally with its threshold overridden."""
    return MaxProbabilityPolicy(policy.threshold if threshold is None else threshold)
