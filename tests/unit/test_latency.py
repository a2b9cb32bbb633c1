"""The cloud latency tracker on a fake clock."""

import pytest

from edgecascade.router.cascade.latency import LatencyTracker


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_unknown_latency_fits_any_budget():
    tracker = LatencyTracker(clock=Clock())
    assert tracker.expected_s() is None and tracker.ewma_s is None and tracker.p95_s is None
    assert tracker.fits(0.001)


def test_p95_and_ewma_over_the_window():
    tracker = LatencyTracker(window=100, alpha=0.5, clock=Clock())
    for i in range(1, 101):
        tracker.record(i / 1000)
    assert tracker.p95_s == pytest.approx(0.09505)
    assert tracker.ewma_s == pytest.approx(0.099, abs=1e-3)
    assert tracker.expected_s() == pytest.approx(0.099, abs=1e-3)  # the EWMA is above the p95
    assert tracker.fits(0.1) and not tracker.fits(0.05)
    tracker.record(0.001)  # the window slides: the oldest (1 ms) goes, p95 stays in the 90s
    assert tracker.p95_s == pytest.approx(0.09505)


def test_a_sudden_slowdown_shows_in_the_ewma_before_the_p95():
    tracker = LatencyTracker(window=100, alpha=0.3, clock=Clock())
    for _ in range(99):
        tracker.record(0.005)
    tracker.record(0.5)
    assert tracker.p95_s == pytest.approx(0.005)
    assert tracker.expected_s() == pytest.approx(0.1535)
    assert not tracker.fits(0.05)


def test_old_samples_are_forgotten_so_a_slow_cloud_is_tried_again():
    clock = Clock()
    tracker = LatencyTracker(max_age_s=10.0, clock=clock)
    tracker.record(0.5)
    assert not tracker.fits(0.1)
    clock.now = 10.5
    assert tracker.fits(0.1) and tracker.expected_s() is None and tracker.ewma_s is None
    tracker.record(0.01)
    assert tracker.ewma_s == pytest.approx(0.01) and tracker.expected_s() == pytest.approx(0.01)


def test_timeouts_count_until_the_cloud_answers_again():
    tracker = LatencyTracker(clock=Clock())
    for _ in range(50):
        tracker.record(0.003)
    for _ in range(10):
        tracker.timed_out(1.0)
    assert tracker.stalled and not tracker.fits(0.5) and tracker.p95_s == pytest.approx(1.0)
    tracker.record(0.004)  # a probe answered: the stall is over, not in 30 s
    assert not tracker.stalled and tracker.expected_s() < 0.01 and tracker.fits(0.3)


def test_a_cloud_too_slow_for_the_budget_is_still_probed_once_per_interval():
    clock = Clock()
    tracker = LatencyTracker(probe_interval_s=0.25, clock=clock)
    tracker.timed_out(1.0)
    assert tracker.admit(0.3)  # nothing let through yet: a probe
    assert not tracker.admit(0.3) and not tracker.admit(0.3)
    clock.now += 0.25
    assert tracker.admit(0.3) and not tracker.admit(0.3)
    assert tracker.admit(2.0)  # a budget the cloud fits always goes
