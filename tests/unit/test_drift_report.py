"""The drift demo's figures from recorded answers and audit counters (no servers), its options'
checks, and its CLI mistakes as one error line."""

import numpy as np
import pytest
from typer.testing import CliRunner

from edgecascade.cloud.common.errors import UserError
from edgecascade.edge.cli import app
from edgecascade.edge.tools.drift_report import (
    Answer,
    Moments,
    Sample,
    agreement_curve,
    build_report,
    plot,
    rolling,
)

V1, V2 = "fashion_edge:1", "fashion_edge:2"
MOMENTS = Moments(shift=100, round_start=200, round_end=250, rollout=300)


def answers(frames: int = 400) -> list[Answer]:
    """Clean frames 0-99 (every 10th sent to the cloud, all right), shifted 100-299 on v1
    (every 2nd sent, the edge wrong on every 4th), v2 from 300 (every 5th sent); frame 350
    failed."""
    out = []
    for i in range(frames):
        version = V1 if i < MOMENTS.rollout else V2
        every = 10 if i < MOMENTS.shift else 2 if version == V1 else 5
        wrong = MOMENTS.shift <= i < MOMENTS.rollout and i % 4 == 0
        error = "decode failed" if i == 350 else ""
        out.append(Answer(i, 3, i % every == 0, False, 4 if wrong else 3, 3, version, error))
    return out


def samples() -> list[Sample]:
    """Audits every 20 frames: 10 per sample, 10 agreed before the shift, 6 on the shifted v1,
    9 on v2."""
    out, audited, agreed = [], 0, 0
    for frame in range(0, 400, 20):
        out.append(Sample(frame, audited, agreed, frame // 2, frame // 3))
        audited += 10
        agreed += 10 if frame < 100 else 6 if frame < 300 else 9
    return out


def test_phases_split_at_the_moments_with_their_rates() -> None:
    report = build_report(answers(), samples(), MOMENTS, frames=402)
    phases = report["phases"]
    assert [p["frames"] for p in phases.values()] == [[0, 100], [100, 200], [200, 300], [300, 402]]
    assert phases["clean"]["escalation_rate"] == 0.1
    assert phases["shifted_before"]["escalation_rate"] == 0.5
    assert phases["shifted_before"]["accuracy"] == {"edge": 0.75, "cascade": 1.0}
    assert phases["shifted_after"]["answered"] == 99  # frame 350 failed
    assert phases["shifted_after"]["accuracy"]["edge"] == 1.0
    # samples at frames 100..180: 4 intervals of the shifted v1 (6 of 10 agreed each)
    assert phases["shifted_before"]["audited"] == 40
    assert phases["shifted_before"]["agreement"] == 0.6
    assert phases["shifted_after"]["agreement"] == 0.9
    assert report["shifted"]["escalation_rate"]["before"] == 0.5
    assert report["shifted"]["escalation_rate"]["after"] == pytest.approx(0.2, abs=0.01)
    assert report["shifted"]["accuracy_edge"] == {"before": 0.75, "after": 1.0}
    # one answer with an error, two frames sent and never answered
    assert report["failed_requests"] == 3
    assert report["edge_versions"] == [V1, V2]


def test_without_a_rollout_every_frame_after_the_round_start_is_adapting() -> None:
    moments = Moments(shift=100, round_start=200, round_end=250, rollout=None)
    phases = build_report(answers(300), samples(), moments, frames=300)["phases"]
    assert phases["adapting"]["frames"] == [200, 300]
    assert phases["shifted_after"]["answered"] == 0
    assert phases["shifted_after"]["escalation_rate"] is None


def test_rolling_means_over_the_last_window() -> None:
    values = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    assert rolling(values, 2).tolist() == [1.0, 0.5, 0.5, 1.0, 0.5]


def test_agreement_curve_over_the_last_window_of_audits() -> None:
    xs, ys = agreement_curve(samples(), window=100)
    assert xs[0] == 100 and ys[0] == 1.0  # audits of frames 0-99
    assert ys[xs.index(300)] == pytest.approx(0.6)  # frames 200-299, shifted on v1
    assert xs[-1] == 380 and ys[-1] == pytest.approx((6 + 4 * 9) / 50)  # one v1 interval


def test_the_plot_is_a_png(tmp_path) -> None:
    path = plot(answers(), samples(), MOMENTS, "test", tmp_path / "drift.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"corruption": "gaussian_noise"}, "in the models' training"),
        ({"corruption": "nope"}, "unknown corruption 'nope'"),
        ({"severity": 6}, "severity 6"),
        ({"examples": 0}, "--examples 0"),
        ({"audit_rate": 0.0}, "--audit-rate 0.0"),
        ({"limit": 300}, "--limit 300"),
        ({"fps": -1.0}, "--fps -1.0"),
    ],
)
def test_impossible_options_are_user_errors(change: dict[str, object], message: str) -> None:
    from edgecascade.edge.tools.demo_drift import DriftOptions

    options = DriftOptions(**change)  # type: ignore[arg-type]
    with pytest.raises(UserError, match=message):
        options.check()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenario", "storm"], "--scenario 'storm': give one of basic, drift"),
        (["--scenario", "drift", "--family", "imagenet"], "--scenario drift runs on fashion"),
        (["--scenario", "drift", "--threshold", "0.5"], "drop --family and --threshold"),
        (["--scenario", "drift", "--epochs", "0"], "--epochs 0: give at least 1"),
    ],
)
def test_a_demo_mistake_is_one_error_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["demo", *args])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1
