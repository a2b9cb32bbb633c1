"""Escalation policies: a confidence score from temperature-scaled edge logits, against a threshold.

The edge answers with its best estimate: the mean, over every view it computed, of the
temperature-scaled probabilities, and its top-1 class. A score says how much that estimate backs
its answer; the edge answers when the score is at least the threshold and escalates below it.
Scores lie in [0, 1], higher meaning more confident, so a threshold of 0 never escalates.

Two ways to look again, both off by default and both paid in edge compute:
- `ensemble`: the edge model is an ensemble (one graph whose output is [N, members, K] logits)
  and every member's probabilities go into the mean;
- `mirror`: the edge model also sees the image flipped left-right, in the same inference (for
  models trained with flips), and both views go into the mean.

Each kind registers itself with `@register_policy` under its `name`: manifests, calibration and
the CLI's help know the kinds from `POLICIES` alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
from numpy.typing import NDArray

from edgecascade.cloud.common.errors import UserError
from edgecascade.cloud.common.manifest import RoutingPolicy, plain_name
from edgecascade.cloud.common.probabilities import softmax

Floats = NDArray[np.floating[Any]]  # logits, probabilities and scores, [..., K] or [...]
Classes = NDArray[np.integer[Any]]  # class ids
Booleans = NDArray[np.bool_]  # per input: escalated, or answered right


def member_logits(logits: Floats) -> Floats:
    """[N, members, K] edge logits from an ensemble's [N, members, K] or one model's [N, K]."""
    return logits.reshape(len(logits), -1, logits.shape[-1])


@dataclass(frozen=True)
class ScorePolicy:
    """Escalate when `score(...)` of softmax(logits / temperature) is below `threshold`."""

    threshold: float
    temperature: float = 1.0
    mirror: bool = False
    ensemble: bool = False
    name: ClassVar[str]

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")

    @property
    def label(self) -> str:
        """The policy's name, with `+ensemble` and `+mirror` for the views it scores."""
        return self.name + "+ensemble" * self.ensemble + "+mirror" * self.mirror

    @property
    def looks(self) -> str:
        """The views it computes: `member 0`, `ensemble`, `mirror` or `ensemble+mirror`."""
        return "+".join(["ensemble"] * self.ensemble + ["mirror"] * self.mirror) or "member 0"

    @property
    def multiview(self) -> bool:
        return self.mirror or self.ensemble

    def views(self, logits: Floats, mirrored: Floats | None = None) -> Floats:
        """What `confidence` takes, from the edge model's logits of the images ([N, K], or
        [N, members, K] for an ensemble) and of their mirrors (alike; needed with `mirror`):
        [N, K] for a one-view policy, else [N, V, K]: the members on the image as given, then
        on its mirror."""
        members = member_logits(logits)
        chosen = members if self.ensemble else members[:, :1]
        if self.mirror:
            if mirrored is None:
                raise ValueError(f"{self.label} needs the edge logits of the mirrored images")
            flipped = member_logits(mirrored)[:, : chosen.shape[1]]
            chosen = np.concatenate([chosen, flipped], axis=1)
        return chosen if self.multiview else chosen[:, 0]

    @staticmethod
    def score(probabilities: Floats, answer: Classes) -> Floats:
        """Confidence per row of [..., K] probabilities in the `answer` class ids [...]."""
        raise NotImplementedError

    def probabilities(self, logits: Floats) -> NDArray[np.float64]:
        """softmax(logits / temperature) of [..., K] edge logits."""
        return softmax(np.asarray(logits, np.float64) / self.temperature)

    def answer(self, logits: Floats) -> tuple[NDArray[np.float64], Floats]:
        """The edge's answer to edge logits [..., K], or [..., V, K] (the views of each input, as
        `views` lays them out) when the policy looks more than once: (probabilities [..., K],
        the mean over views of softmax(logits / temperature); the score of their top-1 class)."""
        probabilities = self.probabilities(logits)
        if self.multiview:
            if probabilities.ndim < 2:
                raise ValueError(f"{self.label} takes [..., views, K] logits, not {logits.shape}")
            probabilities = probabilities.mean(axis=-2)
        return probabilities, self.score(probabilities, probabilities.argmax(axis=-1))

    def confidence(self, logits: Floats) -> Floats:
        """The score of the answer to edge logits (see `answer`)."""
        return self.answer(logits)[1]

    def escalate(self, confidence: float | Floats) -> bool | Booleans:
        return confidence < self.threshold


P = TypeVar("P", bound=type[ScorePolicy])

POLICIES: dict[str, type[ScorePolicy]] = {}
"""Every registered policy kind by name, in registration order."""


class UnknownPolicy(UserError, ValueError):
    """A policy kind that no registered policy has (a manifest's, or a command's option)."""


def register_policy(cls: P) -> P:
    """Class decorator: register a ScorePolicy subclass as the kind its `name` says. A name
    already taken, or one that is not a plain name, is refused (ValueError)."""
    name = plain_name("policy kind", getattr(cls, "name", ""))
    if name in POLICIES:
        raise ValueError(
            f"policy kind {name!r} of {cls.__qualname__} is already registered "
            f"by {POLICIES[name].__module__}.{POLICIES[name].__qualname__}"
        )
    POLICIES[name] = cls
    return cls


def policy_class(kind: str) -> type[ScorePolicy]:
    """The registered policy of `kind`; UnknownPolicy, listing the known kinds, if none."""
    try:
        return POLICIES[kind]
    except KeyError:
        raise UnknownPolicy(
            f"unknown escalation policy kind {kind!r}; known kinds: {', '.join(POLICIES)}"
        ) from None


def _answer_probability(probabilities: Floats, answer: Classes) -> Floats:
    return np.take_along_axis(probabilities, np.asarray(answer)[..., None], axis=-1)[..., 0]


@register_policy
class MaxProbabilityPolicy(ScorePolicy):
    """The answer's probability: the top-1 probability (KubeEdge Sedna's threshold filter)."""

    name: ClassVar[str] = "max_prob"

    @staticmethod
    def score(probabilities: Floats, answer: Classes) -> Floats:
        return _answer_probability(probabilities, answer)


@register_policy
class MarginPolicy(ScorePolicy):
    """The answer's probability minus the highest other one (top-1 minus top-2)."""

    name: ClassVar[str] = "margin"

    @staticmethod
    def score(probabilities: Floats, answer: Classes) -> Floats:
        mine = _answer_probability(probabilities, answer)
        others = probabilities.copy()
        np.put_along_axis(others, np.asarray(answer)[..., None], -np.inf, axis=-1)
        margin: Floats = np.maximum(mine - others.max(axis=-1), 0.0)
        return margin


@register_policy
class EntropyPolicy(ScorePolicy):
    """1 - entropy / log K: 1 for a one-hot answer, 0 for a uniform one (KubeEdge Sedna's
    cross-entropy filter score, 1 + sum(p log p) / log K)."""

    name: ClassVar[str] = "entropy"

    @staticmethod
    def score(probabilities: Floats, answer: Classes) -> Floats:
        p = np.asarray(probabilities)
        plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
        score: Floats = 1.0 + plogp.sum(axis=-1) / np.log(p.shape[-1])
        return score


def policy_from_manifest(policy: RoutingPolicy, threshold: float | None = None) -> ScorePolicy:
    """The policy a manifest names, optionally with its threshold overridden; UnknownPolicy
    when no registered policy has its kind."""
    return policy_class(policy.kind)(
        policy.threshold if threshold is None else threshold,
        policy.temperature,
        policy.mirror,
        policy.ensemble,
    )
