"""How a family's cascade holds up on corrupted test images (cloud/build/corruptions.py).

For every corruption and severity the real models run on the corrupted test split: the edge
INT8 IR on every view the manifest's policy scores (members, and the mirror image), the cloud
ONNX model, both with OpenVINO on CPU. Reported per row: edge-only, cloud-only and cascade
accuracy at the manifest's calibrated threshold, the escalation rate, how often the cloud is
right on what is escalated, and the fraction of the edge's loss that the cascade recovers,
(cascade - edge) / (edge on clean images - edge). Averages are over the rows of the kinds the
cloud's training augmentation covers, of those held out, and of all; their `recovered` is that
of the averaged accuracies. The edge answers with the mean probabilities of the views it scores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
from numpy.typing import NDArray

from edgecascade.cloud.build.corruptions import SEVERITIES, checked_severity, corrupt, corruption
from edgecascade.cloud.build.datasets import fashion
from edgecascade.cloud.common.errors import UserError
from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.paths import edge_model_file
from edgecascade.cloud.common.preprocessing import mirrored
from edgecascade.router.policy.policies import (
    Booleans,
    Classes,
    Floats,
    ScorePolicy,
    policy_from_manifest,
)

BATCH = 1024
F32 = {"INFERENCE_PRECISION_HINT": "f32"}  # the cloud model as the build measured it
GOAL_CLOUD_MARGIN_PT = 5.0
GOAL_RECOVERED = 0.5
GOAL_CLEAN_DROP_PT = 0.3
GOAL_CLEAN_ESCALATION = 0.2
GROUPS = {"in_training": True, "held_out": False}


def outcome(labels: Classes, edge: Classes, cloud: Classes, escalated: Booleans) -> dict[str, Any]:
    """Accuracies of the edge, the cloud and the cascade (the cloud's answer where escalated),
    the escalation rate and the cloud's accuracy on what is escalated."""
    cascade = np.where(escalated, cloud, edge)
    cloud_right = cloud == labels
    return {
        "edge_only": float(np.mean(edge == labels)),
        "cloud_only": float(np.mean(cloud_right)),
        "cascade": float(np.mean(cascade == labels)),
        "escalation_rate": float(np.mean(escalated)),
        "cloud_right_when_escalated": float(cloud_right[escalated].mean())
        if escalated.any()
        else None,
    }


def recovered(cascade: float, edge: float, edge_clean: float) -> float | None:
    """The fraction of the edge's loss the cascade wins back; None where the edge lost nothing."""
    loss = edge_clean - edge
    return (cascade - edge) / loss if loss > 0 else None


def average(rows: Sequence[dict[str, Any]], edge_clean: float) -> dict[str, Any]:
    """Mean of the rows' accuracies and escalation, the cloud's margin over the edge in points,
    and `recovered` of those means."""
    keys = ("edge_only", "cloud_only", "cascade", "escalation_rate")
    mean = {key: float(np.mean([row[key] for row in rows])) for key in keys}
    return {
        **mean,
        "rows": len(rows),
        "cloud_minus_edge_pt": 100 * (mean["cloud_only"] - mean["edge_only"]),
        "recovered": recovered(mean["cascade"], mean["edge_only"], edge_clean),
    }


class Cascade:
    """A family folder's edge INT8 IR and cloud ONNX model, compiled for CPU, and its policy."""

    def __init__(self, folder: Path) -> None:
        manifest = Manifest.load(folder / "manifest.json")
        if manifest.family != "fashion":
            raise UserError(
                f"robustness runs on Fashion-MNIST's test split: family {manifest.family!r} "
                "has no corrupted test set here; use --family fashion"
            )
        self.policy: ScorePolicy = policy_from_manifest(manifest.policy)
        core = ov.Core()
        self.edge = core.compile_model(edge_model_file(folder), "CPU")
        self.cloud = core.compile_model(folder / "cloud" / "model.onnx", "CPU", F32)

    def run(self, images: NDArray[np.uint8]) -> tuple[Classes, Floats, Classes]:
        """Edge answers, their policy confidence and cloud answers for gray images [N, H, W]."""
        batch = images[..., None]
        edge = _logits(self.edge, batch)
        views = self.policy.views(
            edge, _logits(self.edge, mirrored(batch)) if self.policy.mirror else None
        )
        probabilities = self.policy.probabilities(views)
        answer = (probabilities.mean(axis=-2) if self.policy.multiview else probabilities).argmax(
            -1
        )
        return answer, self.policy.confidence(views), _logits(self.cloud, batch).argmax(-1)

    def outcome(self, images: NDArray[np.uint8], labels: Classes) -> dict[str, Any]:
        edge, confidence, cloud = self.run(images)
        escalated = np.asarray(self.policy.escalate(confidence), bool)
        return outcome(labels, edge, cloud, escalated)


def _logits(model: ov.CompiledModel, images: NDArray[np.uint8]) -> Floats:
    parts = [model(images[i : i + BATCH])[0] for i in range(0, len(images), BATCH)]
    logits: Floats = np.concatenate(parts).astype(np.float64)
    return logits


def robustness_report(
    folder: Path,
    names: Iterable[str],
    severities: Sequence[int] = SEVERITIES,
    limit: int | None = None,
    seed: int = 0,
    step: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """The report of the module docstring for the first `limit` test images (all if None);
    `step` is called after each corruption and severity, with its name."""
    kinds = [corruption(name) for name in names]  # a user's mistake shows before any work
    severities = [checked_severity(severity) for severity in severities]
    cascade = Cascade(folder)
    test = fashion("test").head(limit)
    clean = cascade.outcome(test.images, test.labels)
    rows = []
    for kind in kinds:
        for severity in severities:
            row = cascade.outcome(corrupt(test.images, kind.name, severity, seed), test.labels)
            rows.append(
                {
                    "corruption": kind.name,
                    "in_training": kind.in_training,
                    "severity": severity,
                    "level": kind.levels[severity - 1],
                    **row,
                    "recovered": recovered(row["cascade"], row["edge_only"], clean["edge_only"]),
                }
            )
            step(f"{kind.name} {severity}")
    groups = {
        group: average(chosen, clean["edge_only"])
        for group, flag in GROUPS.items()
        if (chosen := [row for row in rows if row["in_training"] == flag])
    }
    mean = average(rows, clean["edge_only"])
    return {
        "family": folder.name,
        "images": len(test),
        "seed": seed,
        "policy": {
            "label": cascade.policy.label,
            "threshold": cascade.policy.threshold,
            "temperature": cascade.policy.temperature,
        },
        "clean": clean,
        "corrupted": rows,
        "average": {**groups, "all": mean},
        "goals": {
            "cloud_margin_pt": mean["cloud_minus_edge_pt"],
            "cloud_margin_met": mean["cloud_minus_edge_pt"] >= GOAL_CLOUD_MARGIN_PT,
            "recovered": mean["recovered"],
            "recovered_met": (mean["recovered"] or 0.0) >= GOAL_RECOVERED,
            "clean_drop_pt": 100 * (clean["cloud_only"] - clean["cascade"]),
            "clean_met": clean["cloud_only"] - clean["cascade"] <= GOAL_CLEAN_DROP_PT / 100
            and clean["escalation_rate"] <= GOAL_CLEAN_ESCALATION,
        },
    }


def plot_robustness(report: dict[str, Any], png: Path) -> None:
    """Accuracy against severity per corruption: edge-only, cloud-only and cascade."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(row["corruption"] for row in report["corrupted"]))
    columns = min(5, len(names))
    rows = -(-len(names) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        mine = [row for row in report["corrupted"] if row["corruption"] == name]
        severities = [0] + [row["severity"] for row in mine]
        for key, style in [("edge_only", "C0-"), ("cloud_only", "C1-"), ("cascade", "C2--")]:
            accuracy = [report["clean"][key]] + [row[key] for row in mine]
            ax.plot(severities, [100 * a for a in accuracy], style, marker=".", label=key)
        held_out = "" if mine[0]["in_training"] else " (held out)"
        ax.set(title=name + held_out, xlabel="severity", ylim=(0, 100), xticks=severities)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    axes[0, 0].set_ylabel("accuracy %")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(
        f"{report['family']}: {report['images']} test images, {report['policy']['label']} "
        f"threshold {report['policy']['threshold']:.3f}"
    )
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
