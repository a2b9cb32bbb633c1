"""The robustness report's arithmetic, on a fake cascade whose answers are known in advance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgecascade.cloud.build.datasets import LabelledImages
from edgecascade.router.policy import robustness
from edgecascade.router.policy.policies import MaxProbabilityPolicy


class FakeCascade(robustness.Cascade):
    """Ten images; at severity s (the images' pixel value) the edge is wrong on the last 2s and
    escalates exactly those; the cloud is wrong on the last image only."""

    def __init__(self, folder: Path) -> None:
        self.policy = MaxProbabilityPolicy(0.5)

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        labels = np.arange(len(images))
        edge_right = labels < len(images) - 2 * int(images[0, 0, 0])
        edge = np.where(edge_right, labels, labels + 1)
        cloud = np.where(labels == len(images) - 1, labels + 1, labels)
        return edge, edge_right.astype(float), cloud


@pytest.fixture()
def report(monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setattr(robustness, "Cascade", FakeCascade)
    monkeypatch.setattr(
        robustness,
        "fashion",
        lambda split: LabelledImages(np.zeros((10, 28, 28), np.uint8), np.arange(10)),
    )
    monkeypatch.setattr(
        robustness, "corrupt", lambda images, name, severity, seed: np.full_like(images, severity)
    )
    return robustness.robustness_report(Path("fashion"), ["gaussian_noise", "jpeg"], [1, 2])


def test_clean_row(report: dict) -> None:
    assert report["clean"] == {
        "edge_only": 1.0,
        "cloud_only": 0.9,
        "cascade": 1.0,
        "escalation_rate": 0.0,
        "cloud_right_when_escalated": None,
    }


def test_rows(report: dict) -> None:
    rows = {(row["corruption"], row["severity"]): row for row in report["corrupted"]}
    assert set(rows) == {(n, s) for n in ("gaussian_noise", "jpeg") for s in (1, 2)}
    for (name, severity), row in rows.items():
        assert row["in_training"] == (name == "gaussian_noise")
        assert row["edge_only"] == pytest.approx(1 - 0.2 * severity)
        assert row["cloud_only"] == pytest.approx(0.9)
        assert row["cascade"] == pytest.approx(0.9)
        assert row["escalation_rate"] == pytest.approx(0.2 * severity)
        # the cloud misses image 9, which every severity escalates
        assert row["cloud_right_when_escalated"] == pytest.approx(1 - 1 / (2 * severity))
        assert row["recovered"] == pytest.approx(1 - 1 / (2 * severity))
    assert rows["jpeg", 2]["level"] == 20 and rows["gaussian_noise", 1]["level"] == 10


def test_averages_and_goals(report: dict) -> None:
    for group in ("in_training", "held_out", "all"):
        mean = report["average"][group]
        assert mean["edge_only"] == pytest.approx(0.7) and mean["cascade"] == pytest.approx(0.9)
        assert mean["escalation_rate"] == pytest.approx(0.3)
        assert mean["cloud_minus_edge_pt"] == pytest.approx(20.0)
        assert mean["recovered"] == pytest.approx((0.9 - 0.7) / (1.0 - 0.7))
    assert (report["average"]["all"]["rows"], report["average"]["held_out"]["rows"]) == (4, 2)
    goals = report["goals"]
    assert goals["cloud_margin_met"] and goals["recovered_met"] and goals["clean_met"]
    assert goals["clean_drop_pt"] == pytest.approx(-10.0)


def test_recovered_is_undefined_where_the_edge_lost_nothing() -> None:
    assert robustness.recovered(0.9, 0.95, 0.95) is None
    assert robustness.recovered(0.9, 0.96, 0.95) is None
    assert robustness.recovered(0.5, 0.6, 0.8) == pytest.approx(-0.5)


def test_outcome_takes_the_cloud_answer_where_escalated() -> None:
    labels = np.array([0, 1, 2, 3])
    edge, cloud = np.array([0, 0, 2, 0]), np.array([1, 1, 2, 3])
    result = robustness.outcome(labels, edge, cloud, np.array([True, True, False, False]))
    assert result == {
        "edge_only": 0.5,
        "cloud_only": 0.75,
        "cascade": 0.5,
        "escalation_rate": 0.5,
        "cloud_right_when_escalated": 0.5,
    }
