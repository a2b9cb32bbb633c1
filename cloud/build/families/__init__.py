"""The model families this system can build: an edge model, a cloud model and their label map."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgecascade.cloud.build.datasets import FASHION_LABELS, imagenet_labels
from edgecascade.cloud.common.manifest import Preprocessing

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
# The fashion family's baseline edge model (weights/fashion_edge_ensemble.onnx: 3 small CNNs, the
# edge served before the wide CNN): the build quantizes it next to the served edge model and
# `router evaluate` compares the two; never served.
FASHION_BASELINE_EDGE = "edge_ensemble"


@dataclass(frozen=True)
class Family:
    """What distinguishes one family from another before anything is built."""

    name: str
    labels: Callable[[], list[str]]
    edge: Preprocessing
    cloud: Preprocessing
    threshold: float  # default max-prob escalation threshold (calibration may replace it)
    description: str
    # What `models build` calibrates the threshold for on the calibration split (the syntax
    # of router.policy.calibration.Target.parse): an accuracy target needs labels that
    # represent the deployment; an escalation budget needs only its images.
    calibration_target: str = "cloud-0.3pt"


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family(
            name="fashion",
            labels=lambda: list(FASHION_LABELS),
            edge=Preprocessing(color="gray", size=28, resize_short=28),
            cloud=Preprocessing(color="gray", size=28, resize_short=28),
            threshold=0.85,
            description="Fashion-MNIST: 38k-parameter CNN at the edge, 257k-parameter CNN "
            "in the cloud, trained here (cloud.families.fashion_train)",
        ),
        Family(
            name="imagenet",
            labels=imagenet_labels,
            edge=Preprocessing(color="rgb", size=224, resize_short=256),
            cloud=Preprocessing(color="rgb", size=260, resize_short=297),
            threshold=0.5,
            description="ImageNet-1k: pretrained EfficientNet-Lite0 at the edge, "
            "EfficientNet-Lite2 in the cloud (cloud.families.imagenet_export)",
            # 300 crops of 20 photos cannot say where the cloud is right (on them Lite2 is
            # below Lite0, so an accuracy target escalates nothing): a budget instead.
            calibration_target="max_escalation=0.2",
        ),
    ]
}
