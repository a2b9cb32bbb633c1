"""Pick a family's escalation policy and threshold on its calibration split (never the test split).

A target is one of:
- an absolute cascade accuracy (`0.925`),
- a drop from cloud-only accuracy (`cloud-0.3pt`: at most 0.3 points below the cloud model),
- an escalation budget (`max_escalation=0.3`: escalate at most 30% of inputs).

The least escalation that meets an accuracy target wins (the most escalation a budget allows).
With `assurance` 1 - delta above 0.5 an accuracy target is risk-controlled in the Learn-then-Test
way (Angelopoulos et al., 2021): each escalation count k is a hypothesis "the target fails when
the k least confident inputs escalate", rejected by a one-sided score test at that confidence
(normal approximation, with the spread where the target just fails rather than the observed
one), and the hypotheses are tested in a fixed sequence, from every input escalated down,
stopping at the first one not rejected. The guarantee: with probability at least 1 - delta over
the draw of the calibration split, the target holds on average over new inputs from the same
distribution (asymptotically: the test is a normal approximation), whether or not accuracy is
monotone in the escalation rate. Scanning from no escalation up and taking the first k whose
bound clears would test many hypotheses at once and, where the accuracy gap hovers just beyond
the target over a range of rates, stop in it far more often than delta; a bound with the
observed spread is too narrow where few kept inputs disagree (both measured in the unit tests).

For `cloud-0.3pt` the test is on the paired per-input difference (cloud right minus cascade
right, non-zero only where the two disagree: Tango's test, see `paired_null_variance`), whose
spread is far smaller than that of either accuracy. With a `window` of m inputs the bound is a
prediction bound for what m new inputs will measure (the calibration split's sampling noise plus
theirs), a stronger promise than the average's; it is off by default."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
from numpy.typing import NDArray

from edgecascade.cloud.build.families import FAMILIES
from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.paths import manifest_path
from edgecascade.cloud.registry.signing_keys import save_build_manifest
from edgecascade.router.policy.policies import (
    POLICIES,
    Booleans,
    Classes,
    Floats,
    MaxProbabilityPolicy,
    ScorePolicy,
    member_logits,
    policy_class,
)
from edgecascade.router.policy.temperature import expected_calibration_error, fit_temperature

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
    def parse(cls, text: str) -> Target:
        """`max_escalation=0.2`, or an accuracy target as `parse_accuracy` takes it."""
        name, _, value = text.strip().partition("=")
        if name == "max_escalation":
            try:
                return cls(max_escalation=float(value))
            except ValueError:
                raise ValueError(f"target {text!r}: give max_escalation=0.2") from None
        return cls.parse_accuracy(text)

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
    """Edge logits and which of the edge and cloud answers are right, for one data split.

    `edge_logits` are [N, members, K] (an ensemble edge model; [N, K] is taken as one member);
    which of them the edge answers with is the policy's choice (see `answer`).
    `mirrored_logits` are alike on the images flipped left-right, where the family's models
    were trained with flips (None otherwise)."""

    edge_logits: Floats
    labels: Classes
    cloud_correct: Booleans
    mirrored_logits: Floats | None = None

    def __post_init__(self) -> None:
        for name in ("edge_logits", "mirrored_logits"):
            logits = getattr(self, name)
            if logits is not None and logits.ndim == 2:
                object.__setattr__(self, name, member_logits(logits))

    @classmethod
    def load(cls, path: Path, edge: str = "edge_logits") -> Split:
        """An .npz with `edge_logits`, `cloud_logits`, `labels` and optionally
        `edge_logits_mirrored` (as `models build` writes); with `edge`, the edge logits of
        another model stored there (a baseline's), and its `<edge>_mirrored` if stored."""
        data = np.load(path)
        labels = data["labels"]
        mirrored = data.get(f"{edge}_mirrored")
        return cls(
            edge_logits=data[edge].astype(np.float64),
            labels=labels,
            cloud_correct=data["cloud_logits"].argmax(-1) == labels,
            mirrored_logits=None if mirrored is None else mirrored.astype(np.float64),
        )

    @property
    def members(self) -> int:
        return self.edge_logits.shape[1]

    def views(self, policy: ScorePolicy) -> Floats:
        """The edge logits `policy` looks at, as `ScorePolicy.views` lays them out."""
        if policy.mirror and self.mirrored_logits is None:
            raise ValueError(f"{policy.label} needs mirrored edge logits, which this split lacks")
        return policy.views(self.edge_logits, self.mirrored_logits)

    def answer(self, policy: ScorePolicy) -> tuple[Floats, Floats]:
        """(probabilities [N, K], score [N]) the edge answers with under `policy`."""
        return policy.answer(self.views(policy))

    def confidence(self, policy: ScorePolicy) -> Floats:
        """`policy`'s score of every input."""
        return self.answer(policy)[1]

    def edge_correct(self, policy: ScorePolicy) -> Booleans:
        """Whether the edge's answer under `policy` (the mean of its views) is right."""
        correct: Booleans = self.answer(policy)[0].argmax(-1) == self.labels
        return correct

    def operating_point(self, policy: ScorePolicy) -> OperatingPoint:
        """Escalation rate and cascade accuracy of `policy` on this split."""
        return operating_point(
            self.confidence(policy), policy.threshold, self.edge_correct(policy), self.cloud_correct
        )

    def curve(self, policy: ScorePolicy) -> NDArray[np.float64]:
        """Cascade accuracy of `policy`'s ranking when k = 0..N inputs escalate."""
        return cascade_curve(
            self.confidence(policy), self.edge_correct(policy), self.cloud_correct
        )[1]

    def fit_temperature(self, policy: ScorePolicy) -> float:
        """The temperature that calibrates the mean of `policy`'s views on this split."""
        return fit_temperature(self.views(policy), self.labels)

    def calibration_error(self, policy: ScorePolicy) -> float:
        """ECE (15 bins) of the probabilities the edge answers with under `policy`."""
        return expected_calibration_error(self.answer(policy)[0], self.labels)


def operating_point(
    confidence: Floats, threshold: float, edge_correct: Booleans, cloud_correct: Booleans
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


def cascade_curve(
    confidence: Floats, edge_correct: Booleans, cloud_correct: Booleans
) -> tuple[Floats, NDArray[np.float64]]:
    """Cascade accuracy when the k least confident inputs escalate, for k = 0..N.

    Returns (sorted confidences, accuracy[k]) with accuracy of length N + 1."""
    order = np.argsort(confidence, kind="stable")
    gain = cloud_correct[order].astype(np.int64) - edge_correct[order].astype(np.int64)
    correct = edge_correct.sum() + np.concatenate([[0], np.cumsum(gain)])
    return confidence[order], correct / len(confidence)


def paired_null_variance(
    only_cloud: NDArray[np.int64], only_edge: NDArray[np.int64], n: int, drop: float
) -> NDArray[np.float64]:
    """Variance of one input's (cloud right) - (cascade right) where the cascade falls exactly
    `drop` short of the cloud on average, at the maximum-likelihood probabilities under that
    constraint (Tango's score test for paired proportions, Stat. Med. 17:891, 1998): the spread
    a test of "the cascade falls more than `drop` short" takes, given, among the inputs kept at
    the edge out of `n`, how many only the cloud (`only_cloud`) and only the edge (`only_edge`)
    answer right. Unlike the observed spread, it does not vanish where few inputs disagree."""
    agree = n - only_cloud - only_edge
    linear = (only_cloud + only_edge) * (1 - drop) - 2 * drop * (only_edge + agree)
    p_edge = (linear + np.sqrt(linear**2 + 8 * n * only_edge * drop * (1 - drop))) / (4 * n)
    variance: NDArray[np.float64] = 2 * p_edge + drop * (1 - drop)
    return variance


def _kept(flags: Booleans, order: Classes) -> NDArray[np.int64]:
    """How many of `flags` are set among the inputs kept at the edge when the k first of
    `order` escalate, for k = 0..N."""
    ranked = flags[order].astype(np.int64)
    kept: NDArray[np.int64] = ranked.sum() - np.concatenate([[0], np.cumsum(ranked)])
    return kept


def _escalations(
    confidence: Floats,
    edge_correct: Booleans,
    cloud_correct: Booleans,
    target: Target,
    z: float,
    window: int | None,
) -> int:
    """How many of the least confident inputs to escalate to meet `target` (see the module
    docstring for `z`, the one-sided normal quantile of the assurance, and `window`): an
    accuracy target's hypotheses are tested from every input escalated down (fixed sequence),
    each with a score test (the spread where the target just fails)."""
    n = len(confidence)
    _, accuracy = cascade_curve(confidence, edge_correct, cloud_correct)
    margin = z * np.sqrt(1 / n + (1 / window if window else 0.0))  # per unit of spread
    if target.max_escalation is not None:
        rate = np.arange(n + 1) / n
        allowed = rate + margin * np.sqrt(rate * (1 - rate)) <= target.max_escalation + 1e-12
        return int(np.flatnonzero(allowed)[-1])
    if target.accuracy is not None:
        spread = np.sqrt(target.accuracy * (1 - target.accuracy))
        ok = accuracy - margin * spread >= target.accuracy - 1e-12
    else:
        assert target.max_drop is not None  # a target sets exactly one field
        # cloud - cascade = mean over the inputs kept at the edge of (cloud_ok - edge_ok).
        order = np.argsort(confidence, kind="stable")
        only_cloud = _kept(cloud_correct & ~edge_correct, order)
        only_edge = _kept(edge_correct & ~cloud_correct, order)
        spread = np.sqrt(paired_null_variance(only_cloud, only_edge, n, target.max_drop))
        ok = (only_cloud - only_edge) / n + margin * spread <= target.max_drop + 1e-12
        ok[-1] = True  # every input escalated: the cascade is the cloud
    if not ok[-1]:
        raise ValueError(
            f"{target} is out of reach on this split at this assurance: not even with every "
            f"input escalated (the cascade reaches at most {accuracy.max():.2%}, cloud-only "
            f"{cloud_correct.mean():.2%}, {n} inputs)"
        )
    # Fixed-sequence testing from every input escalated down: stop before the first failure.
    return int(np.flatnonzero(~ok)[-1] + 1) if not ok.all() else 0


def pick_threshold(
    confidence: Floats,
    edge_correct: Booleans,
    cloud_correct: Booleans,
    target: Target,
    assurance: float = 0.5,
    window: int | None = None,
) -> OperatingPoint:
    """The threshold (escalate iff confidence < threshold) that meets `target` on this split,
    at `assurance` over the next `window` inputs (None: on average)."""
    if not 0.5 <= assurance < 1.0:
        raise ValueError(f"assurance must be in [0.5, 1), got {assurance}")
    if window is not None and window < 1:
        raise ValueError(f"window must be a positive number of inputs, got {window}")
    z = NormalDist().inv_cdf(assurance)
    k = _escalations(confidence, edge_correct, cloud_correct, target, z, window)
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
    window: int | None
    ece_before: float
    ece_after: float


def ranking_quality(split: Split, policy: ScorePolicy) -> float:
    """Mean cascade accuracy over every escalation rate from 0 to 100%: how well the policy's
    score orders inputs from worth escalating to not, whatever the threshold."""
    return float(split.curve(policy).mean())


def candidate_policies(
    split: Split, kind: str | None, mirror: bool | None, ensemble: bool | None
) -> list[ScorePolicy]:
    """Policies of `kind` (None: every kind), looking once or more as the split allows
    (`mirror`/`ensemble` None gives both with and without), each at the temperature fit on
    this split for the views it looks at."""
    looks = {}
    for name, wanted, possible in (
        ("mirror", mirror, split.mirrored_logits is not None),
        ("ensemble", ensemble, split.members > 1),
    ):
        if wanted and not possible:
            raise ValueError(f"this split has no edge logits to calibrate a {name} policy on")
        looks[name] = [wanted] if wanted is not None else [False, True][: 1 + possible]
    temperatures = {
        (flipped, pooled): split.fit_temperature(
            MaxProbabilityPolicy(0.0, mirror=flipped, ensemble=pooled)
        )
        for flipped in looks["mirror"]
        for pooled in looks["ensemble"]
    }
    return [
        cls(0.0, temperature, mirror=flipped, ensemble=pooled)
        for cls in ([policy_class(kind)] if kind else POLICIES.values())
        for (flipped, pooled), temperature in temperatures.items()
    ]


def calibrate(
    split: Split,
    target: Target,
    kind: str | None = None,
    assurance: float = DEFAULT_ASSURANCE,
    mirror: bool | None = None,
    ensemble: bool | None = None,
    window: int | None = None,
) -> Calibration:
    """Fit the temperature of each view set, then pick the threshold of policy `kind` for
    `target` (default: of the policy with the best `ranking_quality` on this split).
    `mirror` and `ensemble` None try the policies with and without the mirrored view and the
    ensemble's other members (with only where the split has their logits). The target holds
    at `assurance` over `window` new inputs (see `pick_threshold`)."""
    candidates = candidate_policies(split, kind, mirror, ensemble)
    scorer = max(candidates, key=lambda policy: ranking_quality(split, policy))
    point = pick_threshold(
        split.confidence(scorer),
        split.edge_correct(scorer),
        split.cloud_correct,
        target,
        assurance,
        window,
    )
    policy = type(scorer)(point.threshold, scorer.temperature, scorer.mirror, scorer.ensemble)
    return Calibration(
        policy=policy,
        point=point,
        target=target,
        assurance=assurance,
        window=window,
        ece_before=split.calibration_error(type(policy)(0.0, 1.0, policy.mirror, policy.ensemble)),
        ece_after=split.calibration_error(policy),
    )


def calibrate_manifest(
    manifest_file: Path,
    target: Target = Target(max_drop=0.003),
    kind: str | None = None,
    assurance: float = DEFAULT_ASSURANCE,
    mirror: bool | None = None,
    ensemble: bool | None = None,
    window: int | None = None,
) -> Calibration | None:
    """Calibrate on the `calibration.npz` next to the manifest and store the policy (kind,
    threshold, temperature, views) in it; None (manifest untouched) without a calibration split."""
    data_file = manifest_file.parent / "calibration.npz"
    if not data_file.exists():
        return None
    split = Split.load(data_file)
    result = calibrate(split, target, kind, assurance, mirror, ensemble, window)
    manifest = Manifest.load(manifest_file)
    manifest.policy.kind = result.policy.name
    manifest.policy.threshold = result.policy.threshold
    manifest.policy.temperature = result.policy.temperature
    manifest.policy.mirror = result.policy.mirror
    manifest.policy.ensemble = result.policy.ensemble
    manifest.notes["threshold"] = threshold_note(
        result, f"on the calibration split ({len(split.labels)} images)"
    )
    save_build_manifest(manifest, manifest_file)  # signed again: the policy changed
    return result


def threshold_note(result: Calibration, picked: str) -> str:
    """The manifest's note on a calibrated threshold, `picked` saying where ("on the ...")."""
    return (
        f"{result.policy.label} threshold {result.policy.threshold:.4f} at temperature "
        f"{result.policy.temperature:.4f}, picked {picked} for {result.target} "
        + (f"over {result.window} new inputs" if result.window else "on average")
        + f" at {result.assurance:.0%} assurance"
        + (" (fixed-sequence score tests): " if result.target.max_escalation is None else ": ")
        + f"{result.point.escalation_rate:.1%} escalated, cascade "
        f"{result.point.cascade_accuracy:.2%} vs cloud-only {result.point.cloud_accuracy:.2%}"
    )


def calibrate_family(name: str) -> Calibration | None:
    """Calibrate the built family `name` under the artifacts root for the target its Family
    declares (as `models build` does after building); None without a calibration split."""
    return calibrate_manifest(manifest_path(name), Target.parse(FAMILIES[name].calibration_target))
