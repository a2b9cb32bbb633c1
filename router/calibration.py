"""Pick a family's escalation policy and threshold on its calibration split (never the test split).

A target is one of:
- an absolute cascade accuracy (`0.925`),
- a drop from cloud-only accuracy (`cloud-0.3pt`: at most 0.3 points below the cloud model),
- an escalation budget (`max_escalation=0.3`: escalate at most 30% of inputs).

The least escalation that meets an accuracy target wins (the most escalation a budget allows).
With `assurance` above 0.5 the target must hold for a normal-approximation lower bound of the
cascade accuracy (upper bound of the escalation rate) at that one-sided confidence, which guards
against a calibration split that flatters the edge model."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np

from cloud.manifest import Manifest
from router.policy import POLICIES, MaxProbabilityPolicy, ScorePolicy
from router.temperature import expected_calibration_error, fit_temperature

DEFAULT_ASSURANCE = 0.95
_CLOUD_DROP = re.compile(r"cloud-(\d+(?:\.\d+)?)pt")


@dataclass(frozen=True)
class Target:
    """What a threshold is calibrated for: exactly one field is set (see the module docstring)."""

    accuracy: float | None = None
    max_drop: float | None = None
    max_escalation: float | None = None

    def __post_init__(self) -> None:
        if sum(v is not None for v in (self.accuracy, self.max_drop, self.max_escalation)) != 1:
            raise ValueError("a target sets exactly one of accuracy, max_drop, max_escalation")
        for value in (self.accuracy, self.max_drop, self.max_escalation):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"target {value} is not a fraction in [0, 1]")

    @classmethod
    def parse_accuracy(cls, text: str) -> Target:
        """`0.925` (absolute accuracy) or `cloud-0.3pt` (points below cloud-only accuracy)."""
        if match := _CLOUD_DROP.fullmatch(text.strip()):
            return cls(max_drop=float(match.group(1)) / 100)
        try:
            return cls(accuracy=float(text))
        except ValueError:
            raise ValueError(
                f"accuracy target {text!r}: give a fraction like 0.925 or a drop like cloud-0.3pt"
            ) from None

    def __str__(self) -> str:
        if self.accuracy is not None:
            return f"cascade accuracy >= {self.accuracy:.2%}"
        if self.max_drop is not None:
            return f"within {self.max_drop * 100:g} pt of cloud-only accuracy"
        return f"at most {self.max_escalation:.1%} escalated"


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    escalation_rate: float
    cascade_accuracy: float
    edge_accuracy: float
    cloud_accuracy: float


@dataclass(frozen=True)
class Split:
    """Edge logits and which of the edge and cloud answers are right, for one data split;
    `mirrored_logits` are the edge model's on the images flipped left-right, where the family's
    models were trained with flips (None otherwise)."""

    edge_logits: np.ndarray
    labels: np.ndarray
    edge_correct: np.ndarray
    cloud_correct: np.ndarray
    mirrored_logits: np.ndarray | None = None

    @classmethod
    def load(cls, path: Path) -> Split:
        """An .npz with `edge_logits`, `cloud_logits`, `labels` and optionally
        `edge_logits_mirrored` (as `models build` writes)."""
        data = np.load(path)
        labels = data["labels"]
        mirrored = data.get("edge_logits_mirrored")
        return cls(
            edge_logits=data["edge_logits"].astype(np.float64),
            labels=labels,
            edge_correct=data["edge_logits"].argmax(-1) == labels,
            cloud_correct=data["cloud_logits"].argmax(-1) == labels,
            mirrored_logits=None if mirrored is None else mirrored.astype(np.float64),
        )

    def confidence(self, policy: ScorePolicy) -> np.ndarray:
        """`policy`'s score of every input."""
        if not policy.mirror:
            return policy.confidence(self.edge_logits)
        if self.mirrored_logits is None:
            raise ValueError(f"{policy.label} needs mirrored edge logits, which this split lacks")
        return policy.confidence(np.stack([self.edge_logits, self.mirrored_logits], axis=1))

    def operating_point(self, policy: ScorePolicy) -> OperatingPoint:
        """Escalation rate and cascade accuracy of `policy` on this split."""
        return operating_point(
            self.confidence(policy), policy.threshold, self.edge_correct, self.cloud_correct
        )

    def curve(self, policy: ScorePolicy) -> np.ndarray:
        """Cascade accuracy of `policy`'s ranking when k = 0..N inputs escalate."""
        return cascade_curve(self.confidence(policy), self.edge_correct, self.cloud_correct)[1]


def operating_point(
    confidence: np.ndarray, threshold: float, edge_correct: np.ndarray, cloud_correct: np.ndarray
) -> OperatingPoint:
    """Where escalating iff confidence < threshold lands."""
    escalate = confidence < threshold
    return OperatingPoint(
        threshold=threshold,
        escalation_rate=float(escalate.mean()),
        cascade_accuracy=float(np.where(escalate, cloud_correct, edge_correct).mean()),
        edge_accuracy=float(edge_correct.mean()),
        cloud_accuracy=float(cloud_correct.mean()),
    )


def cascade_curve(confidence: np.ndarray, edge_correct: np.ndarray, cloud_correct: np.ndarray):
    """Cascade accuracy when the k least confident inputs escalate, for k = 0..N.

    Returns (sorted confidences, accuracy[k]) with accuracy of length N + 1."""
    order = np.argsort(confidence, kind="stable")
    gain = cloud_correct[order].astype(np.int64) - edge_correct[order].astype(np.int64)
    correct = edge_correct.sum() + np.concatenate([[0], np.cumsum(gain)])
    return confidence[order], correct / len(confidence)


def _escalations(
    confidence: np.ndarray,
    edge_correct: np.ndarray,
    cloud_correct: np.ndarray,
    target: Target,
    z: float,
) -> int:
    """How many of the least confident inputs to escalate to meet `target`."""
    n = len(confidence)
    _, accuracy = cascade_curve(confidence, edge_correct, cloud_correct)
    if target.max_escalation is not None:
        rate = np.arange(n + 1) / n
        allowed = rate + z * np.sqrt(rate * (1 - rate) / n) <= target.max_escalation + 1e-12
        return int(np.flatnonzero(allowed)[-1])
    if target.accuracy is not None:
        lower = accuracy - z * np.sqrt(accuracy * (1 - accuracy) / n)
        ok = lower >= target.accuracy - 1e-12
    else:
        # cascade - cloud = mean over inputs kept at the edge of (edge_ok - cloud_ok).
        disagree = (edge_correct != cloud_correct)[np.argsort(confidence, kind="stable")]
        kept_disagreements = disagree.sum() - np.concatenate([[0], np.cumsum(disagree)])
        delta = accuracy - cloud_correct.mean()
        spread = np.sqrt(np.maximum(kept_disagreements / n - delta**2, 0.0) / n)
        ok = delta - z * spread >= -target.max_drop - 1e-12
    if not ok.any():
        raise ValueError(
            f"{target} is out of reach on this split at this assurance: the cascade reaches "
            f"at most {accuracy.max():.2%} (cloud-only {cloud_correct.mean():.2%}, {n} inputs)"
        )
    return int(np.argmax(ok))


def pick_threshold(
    confidence: np.ndarray,
    edge_correct: np.ndarray,
    cloud_correct: np.ndarray,
    target: Target,
    assurance: float = 0.5,
) -> OperatingPoint:
    """The threshold (escalate iff confidence < threshold) that meets `target` on this split."""
    if not 0.5 <= assurance < 1.0:
        raise ValueError(f"assurance must be in [0.5, 1), got {assurance}")
    k = _escalations(
        confidence, edge_correct, cloud_correct, target, NormalDist().inv_cdf(assurance)
    )
    ranked = np.sort(confidence)
    # Put the threshold between the k-th and (k+1)-th lowest score.
    if k == 0:
        threshold = float(ranked[0])
    elif k == len(ranked):
        threshold = float(np.nextafter(ranked[-1], np.inf))
    else:
        threshold = float((ranked[k - 1] + ranked[k]) / 2)
    return operating_point(confidence, min(threshold, 1.0), edge_correct, cloud_correct)


@dataclass(frozen=True)
class Calibration:
    policy: ScorePolicy
    point: OperatingPoint
    target: Target
    assurance: float
    ece_before: float
    ece_after: float


def ranking_quality(split: Split, policy: ScorePolicy) -> float:
    """Mean cascade accuracy over every escalation rate from 0 to 100%: how well the policy's
    score orders inputs from worth escalating to not, whatever the threshold."""
    return float(split.curve(policy).mean())


def calibrate(
    split: Split,
    target: Target,
    kind: str | None = None,
    assurance: float = DEFAULT_ASSURANCE,
    mirror: bool | None = None,
) -> Calibration:
    """Fit the temperature, then pick the threshold of policy `kind` for `target` (default: of
    the policy with the best `ranking_quality` on this split). `mirror` None tries the policies
    with and without the mirrored view (with only where the split has mirrored logits)."""
    temperature = fit_temperature(split.edge_logits, split.labels)
    mirrors = [mirror] if mirror is not None else [False, True]
    if split.mirrored_logits is None:
        if mirror:
            raise ValueError("this split has no mirrored edge logits to calibrate a mirror on")
        mirrors = [False]
    candidates = [
        POLICIES[name](0.0, temperature, flag)
        for name in ([kind] if kind else POLICIES)
        for flag in mirrors
    ]
    scorer = max(candidates, key=lambda policy: ranking_quality(split, policy))
    point = pick_threshold(
        split.confidence(scorer), split.edge_correct, split.cloud_correct, target, assurance
    )
    policy = type(scorer)(point.threshold, temperature, scorer.mirror)
    return Calibration(
        policy=policy,
        point=point,
        target=target,
        assurance=assurance,
        ece_before=expected_calibration_error(
            MaxProbabilityPolicy(0.0).probabilities(split.edge_logits), split.labels
        ),
        ece_after=expected_calibration_error(policy.probabilities(split.edge_logits), split.labels),
    )


def calibrate_manifest(
    manifest_file: Path,
    target: Target = Target(max_drop=0.003),
    kind: str | None = None,
    assurance: float = DEFAULT_ASSURANCE,
    mirror: bool | None = None,
) -> Calibration | None:
    """Calibrate on the `calibration.npz` next to the manifest and store the policy (kind,
    threshold, temperature) in it; None (manifest untouched) without a calibration split."""
    data_file = manifest_file.parent / "calibration.npz"
    if not data_file.exists():
        return None
    split = Split.load(data_file)
    result = calibrate(split, target, kind, assurance, mirror)
    manifest = Manifest.load(manifest_file)
    manifest.policy.kind = result.policy.name
    manifest.policy.threshold = result.policy.threshold
    manifest.policy.temperature = result.policy.temperature
    manifest.policy.mirror = result.policy.mirror
    manifest.notes["threshold"] = (
        f"{result.policy.label} threshold {result.policy.threshold:.4f} at temperature "
        f"{result.policy.temperature:.4f}, picked on the calibration split ({len(split.labels)} "
        f"images) for {target} at {assurance:.0%} assurance: "
        f"{result.point.escalation_rate:.1%} escalated, cascade {result.point.cascade_accuracy:.2%}"
        f" vs cloud-only {result.point.cloud_accuracy:.2%}"
    )
    manifest.save(manifest_file)
    return result
