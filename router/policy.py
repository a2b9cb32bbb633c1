"""Escalation policies: a confidence score from temperature-scaled edge logits, against a threshold.

Every score lies in [0, 1], higher meaning more confident; the edge answers when the score is at
least the threshold and escalates below it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy.special import entr

from cloud.manifest import RoutingPolicy


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of [..., K] logits, numerically stable."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class ScorePolicy:
    """Escalate when `score(softmax(logits / temperature))` is below `threshold`."""

    threshold: float
    temperature: float = 1.0
    name: ClassVar[str]

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")

    @staticmethod
    def score(probabilities: np.ndarray) -> np.ndarray:
        """Confidence in [0, 1] per row of [..., K] probabilities."""
        raise NotImplementedError

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """softmax(logits / temperature) of [..., K] edge logits."""
        return softmax(np.asarray(logits, np.float64) / self.temperature)

    def confidence(self, logits: np.ndarray) -> np.ndarray:
        """The policy's score of [..., K] edge logits, after temperature scaling."""
        return self.score(self.probabilities(logits))

    def escalate(self, confidence: float | np.ndarray) -> bool | np.ndarray:
        return confidence < self.threshold


class MaxProbabilityPolicy(ScorePolicy):
    """Top-1 probability."""

    name: ClassVar[str] = "max_prob"

    @staticmethod
    def score(probabilities: np.ndarray) -> np.ndarray:
        return probabilities.max(axis=-1)


class MarginPolicy(ScorePolicy):
    """Top-1 minus top-2 probability."""

    name: ClassVar[str] = "margin"

    @staticmethod
    def score(probabilities: np.ndarray) -> np.ndarray:
        top2 = np.partition(probabilities, -2, axis=-1)[..., -2:]
        return top2[..., 1] - top2[..., 0]


class EntropyPolicy(ScorePolicy):
    """1 - entropy / log K: 1 for a one-hot answer, 0 for a uniform one (KubeEdge Sedna's
    cross-entropy filter score, 1 + sum(p log p) / log K)."""

    name: ClassVar[str] = "entropy"

    @staticmethod
    def score(probabilities: np.ndarray) -> np.ndarray:
        return 1.0 - entr(probabilities).sum(axis=-1) / np.log(probabilities.shape[-1])


POLICIES: dict[str, type[ScorePolicy]] = {
    cls.name: cls for cls in (MaxProbabilityPolicy, MarginPolicy, EntropyPolicy)
}


def policy_from_manifest(policy: RoutingPolicy, threshold: float | None = None) -> ScorePolicy:
    """The policy a manifest names, optionally with its threshold overridden."""
    return POLICIES[policy.kind](
        policy.threshold if threshold is None else threshold, policy.temperature
    )
