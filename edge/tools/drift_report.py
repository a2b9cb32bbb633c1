"""The drift demo's figures: every answer and the agent's audit counters over time, split into
phases at the moments that matter (the shift, the adapt round, the roll-out), as a JSON-ready
report and a PNG (needs matplotlib, the "build" extra)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

WINDOW = 100  # frames per point of the rolling curves
AUDIT_WINDOW = 3 * WINDOW  # audits are a sample of the confident answers: a longer window
MIN_AUDITS = 10  # audited answers a point of the agreement curve needs


@dataclass(frozen=True)
class Answer:
    """One frame's answer: `sent_cloud` when the policy sent it to the cloud (answered there,
    or degraded because the cloud could not be used); `error` is "" unless it failed."""

    frame: int
    label: int
    sent_cloud: bool
    degraded: bool
    edge_class: int
    top1: int
    edge_version: str
    error: str = ""


@dataclass(frozen=True)
class Sample:
    """The agent's counters when `frame` answers had come back: audited answers and those the
    cloud agreed with (all versions), examples kept at the edge and received by the cloud."""

    frame: int
    audited: int
    agreed: int
    collected: int
    uploaded: int


@dataclass(frozen=True)
class Moments:
    """Frame indexes: the first shifted frame, the answers back when the adapt round began and
    ended, and the first frame the new version answered (None: it never did)."""

    shift: int
    round_start: int
    round_end: int
    rollout: int | None


def phase_bounds(moments: Moments, frames: int) -> dict[str, tuple[int, int]]:
    """Each phase's [start, end) frames: clean, shifted before the round, during it until the
    roll-out, and after the roll-out."""
    rollout = frames if moments.rollout is None else moments.rollout
    start = min(moments.round_start, rollout)
    return {
        "clean": (0, moments.shift),
        "shifted_before": (moments.shift, start),
        "adapting": (start, rollout),
        "shifted_after": (rollout, frames),
    }


def _rate(values: NDArray[np.bool_]) -> float | None:
    return round(float(values.mean()), 4) if len(values) else None


def agreement(samples: list[Sample], start: int, end: int) -> dict[str, Any]:
    """Audited answers and agreement with the cloud between the samples taken in [start, end)."""
    inside = [s for s in samples if start <= s.frame < end]
    if len(inside) < 2:
        return {"audited": 0, "agreement": None}
    audited = inside[-1].audited - inside[0].audited
    agreed = inside[-1].agreed - inside[0].agreed
    return {"audited": audited, "agreement": round(agreed / audited, 4) if audited else None}


def phase_figures(
    answers: list[Answer], samples: list[Sample], bounds: tuple[int, int]
) -> dict[str, Any]:
    """Frames, escalation rate, accuracy against the true labels and audited agreement."""
    start, end = bounds
    inside = [a for a in answers if start <= a.frame < end and not a.error]
    labels = np.array([a.label for a in inside])
    return {
        "frames": [start, end],
        "answered": len(inside),
        "escalation_rate": _rate(np.array([a.sent_cloud for a in inside], bool)),
        "accuracy": {
            "edge": _rate(np.array([a.edge_class for a in inside]) == labels),
            "cascade": _rate(np.array([a.top1 for a in inside]) == labels),
        },
        **agreement(samples, start, end),
    }


def build_report(
    answers: list[Answer], samples: list[Sample], moments: Moments, frames: int
) -> dict[str, Any]:
    """Phases, the shifted domain before and after the roll-out, failures and versions."""
    phases = {
        name: phase_figures(answers, samples, bounds)
        for name, bounds in phase_bounds(moments, frames).items()
    }
    before, after = phases["shifted_before"], phases["shifted_after"]
    keys = ("escalation_rate", "agreement")
    return {
        "moments": moments.__dict__,
        "phases": phases,
        "shifted": {
            **{key: {"before": before[key], "after": after[key]} for key in keys},
            **{
                f"accuracy_{tier}": {
                    "before": before["accuracy"][tier],
                    "after": after["accuracy"][tier],
                }
                for tier in ("edge", "cascade")
            },
        },
        "failed_requests": sum(bool(a.error) for a in answers) + frames - len(answers),
        "degraded": sum(a.degraded for a in answers),
        "edge_versions": list(dict.fromkeys(a.edge_version for a in answers if a.edge_version)),
    }


def rolling(values: NDArray[np.float64], window: int = WINDOW) -> NDArray[np.float64]:
    """The mean of the last `window` values at each index (fewer at the start)."""
    sums = np.cumsum(np.concatenate([[0.0], values]))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    means: NDArray[np.float64] = (sums[ends] - sums[starts]) / (ends - starts)
    return means


def agreement_curve(samples: list[Sample], window: int = WINDOW) -> tuple[list[int], list[float]]:
    """Audited agreement over the last `window` frames at each sample (points with fewer than
    MIN_AUDITS audited answers are left out)."""
    xs, ys = [], []
    for i, sample in enumerate(samples):
        earlier = [s for s in samples[:i] if s.frame <= sample.frame - window]
        if earlier and (audited := sample.audited - earlier[-1].audited) >= MIN_AUDITS:
            xs.append(sample.frame)
            ys.append((sample.agreed - earlier[-1].agreed) / audited)
    return xs, ys


def plot(
    answers: list[Answer], samples: list[Sample], moments: Moments, title: str, path: Path
) -> Path:
    """Escalation rate, audited agreement and accuracy against the true labels over the
    frames, the shift, the adapt round and the roll-out marked; written to `path` (PNG)."""
    from matplotlib.figure import Figure

    ok = [a for a in answers if not a.error]
    x = np.array([a.frame for a in ok])
    labels = np.array([a.label for a in ok])
    figure = Figure(figsize=(10, 5.5), layout="constrained")
    axes = figure.add_subplot()
    curves = {
        "escalation rate": np.array([a.sent_cloud for a in ok], float),
        "edge accuracy": (np.array([a.edge_class for a in ok]) == labels).astype(float),
        "cascade accuracy": (np.array([a.top1 for a in ok]) == labels).astype(float),
    }
    for name, values in curves.items():
        axes.plot(x, rolling(values), label=f"{name} (last {WINDOW} frames)")
    xs, ys = agreement_curve(samples, AUDIT_WINDOW)
    axes.plot(xs, ys, ".-", label=f"audited agreement (last {AUDIT_WINDOW} frames)")
    axes.axvline(moments.shift, color="gray", linestyle=":", label="corruption starts")
    axes.axvspan(moments.round_start, moments.round_end, color="orange", alpha=0.15)
    axes.axvline(moments.round_start, color="orange", linestyle="--", label="adapt round")
    if moments.rollout is not None:
        axes.axvline(moments.rollout, color="green", linestyle="-", label="new version rolled out")
    axes.set(xlabel="frame", ylabel="rate", ylim=(0, 1.02), title=title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left", fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path
