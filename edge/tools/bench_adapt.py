"""`edgecascade bench adapt`: the issue-17 goal measured offline. One adaptation round on a
simulated drift (cloud/build/adapt_drift.py), judged on the shifted and clean test split with
the manifest's escalation policy: escalation needed to come within 0.3 pt of cloud-only,
edge-only accuracy, and the uplink the round's examples cost."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from edgecascade.cloud.build.adapt import Step
from edgecascade.cloud.build.adapt_drift import DriftRound, Views, drift_round
from edgecascade.cloud.build.adapt_recipe import Recipe
from edgecascade.cloud.common.manifest import Manifest
from edgecascade.router.policy.calibration import Split, cascade_curve
from edgecascade.router.policy.policies import ScorePolicy, policy_from_manifest

MAX_DROP = 0.003  # within 0.3 pt of cloud-only
GOALS = {"escalation_fall": 0.40, "shifted_edge_gain": 0.05, "clean_edge_loss": 0.003}


def escalation_needed(split: Split, policy: ScorePolicy) -> float:
    """The least share of inputs, escalated least confident first, that brings the cascade
    within MAX_DROP of cloud-only on `split`."""
    _, accuracy = cascade_curve(
        split.confidence(policy), split.edge_correct(policy), split.cloud_correct
    )
    ok = accuracy >= split.cloud_correct.mean() - MAX_DROP - 1e-12
    return int(np.argmax(ok)) / len(split.labels)


def _figures(
    views: Views, cloud: NDArray[np.float32], labels: NDArray[np.int64], policy: ScorePolicy
) -> dict[str, float]:
    split = Split(views.plain, labels, cloud.argmax(-1) == labels, views.mirror)
    return {
        "edge_accuracy": float(split.edge_correct(policy).mean()),
        "member0_accuracy": float((views.plain[:, 0].argmax(-1) == labels).mean()),
        "cloud_accuracy": float(split.cloud_correct.mean()),
        "escalation_needed": escalation_needed(split, policy),
    }


def report(result: DriftRound, policy: ScorePolicy, fps: float, escalated: float) -> dict[str, Any]:
    """Figures before and after on both splits, the goals and the uplink."""
    figures = {
        split: {
            model: _figures(
                getattr(result, model)[split], result.cloud[split], result.labels, policy
            )
            for model in ("before", "after")
        }
        for split in ("shifted", "clean")
    }
    shifted, clean = figures["shifted"], figures["clean"]
    fall = 1 - shifted["after"]["escalation_needed"] / shifted["before"]["escalation_needed"]
    gain = shifted["after"]["edge_accuracy"] - shifted["before"]["edge_accuracy"]
    loss = clean["before"]["edge_accuracy"] - clean["after"]["edge_accuracy"]
    per_example = result.uplink_bytes / result.examples
    return {
        **figures,
        "goals": {
            "escalation_fall": {
                "value": fall,
                "goal": GOALS["escalation_fall"],
                "met": fall >= GOALS["escalation_fall"],
            },
            "shifted_edge_gain": {
                "value": gain,
                "goal": GOALS["shifted_edge_gain"],
                "met": gain >= GOALS["shifted_edge_gain"],
            },
            "clean_edge_loss": {
                "value": loss,
                "goal": GOALS["clean_edge_loss"],
                "met": loss <= GOALS["clean_edge_loss"],
            },
        },
        "examples": result.examples,
        "train_seconds": result.train_seconds,
        "uplink": {
            "bytes_per_round": result.uplink_bytes,
            "bytes_per_example": per_example,
            "bytes_per_camera_hour": per_example * fps * 3600 * escalated,
            "assumptions": f"{fps:g} frames/s, {escalated:.0%} of frames escalated or audited, "
            "every one kept and uploaded (image and both probability vectors)",
        },
    }


@contextmanager
def distil_progress() -> Iterator[Step]:
    """A rich progress bar of distillation steps and their loss, and the Step that feeds it."""
    columns = (
        TextColumn("distilling"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} loss {task.fields[loss]:.3f}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns) as progress:
        task = progress.add_task("distil", total=None, loss=0.0)
        yield lambda done, total, loss: progress.update(
            task, completed=done, total=total, loss=loss
        )


def run_bench(
    family_folder: Path,
    kind: str,
    severity: int,
    examples: int,
    recipe: Recipe,
    path: Path,
    fps: float = 5.0,
    escalated: float | None = None,
) -> dict[str, Any]:
    """Run one round with a progress bar, write the JSON report to `path` and return it."""
    torch.set_num_threads(1)
    policy = policy_from_manifest(Manifest.load(family_folder / "manifest.json").policy)
    with distil_progress() as step, tempfile.TemporaryDirectory() as tmp:
        result = drift_round(family_folder, kind, severity, examples, recipe, Path(tmp), step)
    out = report(
        result, policy, fps, escalated if escalated is not None else report_rate(result, policy)
    )
    out = {"corruption": {"kind": kind, "severity": severity}, "recipe": recipe.__dict__, **out}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    return out


def report_rate(result: DriftRound, policy: ScorePolicy) -> float:
    """The share of shifted frames the serving policy escalates at its threshold (the frames
    an edge collects before adapting)."""
    views = result.before["shifted"]
    split = Split(
        views.plain,
        result.labels,
        result.cloud["shifted"].argmax(-1) == result.labels,
        views.mirror,
    )
    return float(np.mean(split.confidence(policy) < policy.threshold))
