"""Pick a family's escalation threshold on its calibration split (never the test split)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cloud.manifest import Manifest
from router.policy import MaxProbabilityPolicy


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    escalation_rate: float
    cascade_accuracy: float
    edge_accuracy: float
    cloud_accuracy: float


def cascade_curve(confidence: np.ndarray, edge_correct: np.ndarray, cloud_correct: np.ndarray):
    """Cascade accuracy when the k least confident inputs escalate, for k = 0..N.

    Returns (sorted confidences, accuracy[k]) with accuracy of length N + 1."""
    order = np.argsort(confidence, kind="stable")
    gain = cloud_correct[order].astype(np.int64) - edge_correct[order].astype(np.int64)
    correct = edge_correct.sum() + np.concatenate([[0], np.cumsum(gain)])
    return confidence[order], correct / len(confidence)


def pick_threshold(
    confidence: np.ndarray,
    edge_correct: np.ndarray,
    cloud_correct: np.ndarray,
    max_accuracy_drop: float,
) -> OperatingPoint:
    """The lowest escalation rate whose cascade accuracy is within `max_accuracy_drop`
    (a fraction, 0.003 = 0.3 points) of cloud-only accuracy."""
    n = len(confidence)
    conf_sorted, accuracy = cascade_curve(confidence, edge_correct, cloud_correct)
    cloud_acc = float(cloud_correct.mean())
    k = int(np.argmax(accuracy >= cloud_acc - max_accuracy_drop - 1e-12))
    # Escalate iff confidence < threshold: put it between the k-th and (k+1)-th lowest score.
    if k == 0:
        threshold = float(conf_sorted[0])
    elif k == n:
        threshold = float(np.nextafter(conf_sorted[-1], np.inf))
    else:
        threshold = float((conf_sorted[k - 1] + conf_sorted[k]) / 2)
    return OperatingPoint(
        threshold=min(threshold, 1.0),
        escalation_rate=k / n,
        cascade_accuracy=float(accuracy[k]),
        edge_accuracy=float(edge_correct.mean()),
        cloud_accuracy=cloud_acc,
    )


def calibrate_manifest(
    manifest_file: Path, max_accuracy_drop: float = 0.003
) -> OperatingPoint | None:
    """Store the calibrated max-probability threshold in the manifest next to
    `calibration.npz`; None (manifest untouched) when the family has no calibration split."""
    data_file = manifest_file.parent / "calibration.npz"
    if not data_file.exists():
        return None
    data = np.load(data_file)
    labels = data["labels"]
    confidence = MaxProbabilityPolicy(0.0).confidence(data["edge_logits"])
    point = pick_threshold(
        confidence,
        data["edge_logits"].argmax(-1) == labels,
        data["cloud_logits"].argmax(-1) == labels,
        max_accuracy_drop,
    )
    manifest = Manifest.load(manifest_file)
    manifest.policy.threshold = point.threshold
    manifest.notes["threshold"] = (
        f"max_prob threshold {point.threshold:.4f} picked on the calibration split "
        f"({len(labels)} images): within {max_accuracy_drop * 100:.1f} pt of cloud-only "
        f"accuracy at {point.escalation_rate:.1%} escalation"
    )
    manifest.save(manifest_file)
    return point
