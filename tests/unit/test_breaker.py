"""The circuit breaker's state machine on a fake clock."""

import pytest

from edgecascade.router.cascade.breaker import CircuitBreaker


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker(failures=3, cooldown_s=2.0, clock=clock)


def test_opens_after_n_failures_in_a_row_only():
    b = breaker(Clock())
    b.failure(), b.failure(), b.success(), b.failure(), b.failure()
    assert b.state == "closed" and b.allow()
    b.failure()
    assert b.state == "open" and not b.allow()


def test_cools_down_then_lets_exactly_one_probe_through_and_closes_on_its_success():
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.failure()
    clock.now += 1.99
    assert not b.allow() and b.state == "open"
    clock.now += 0.02
    assert b.state == "half-open"
    assert b.allow() and not b.allow() and not b.allow()  # one probe in flight
    b.success()
    assert b.state == "closed" and b.allow() and b.allow()


def test_a_failed_probe_reopens_for_another_cooldown():
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.failure()
    clock.now += 2.0
    assert b.allow()
    b.failure()
    assert b.state == "open" and not b.allow()
    clock.now += 2.0
    assert b.allow()


def test_probes_go_every_cooldown_however_long_each_takes_to_fail():
    """A probe that times out after 1.5 s (a stalled cloud) does not push the next one a whole
    cooldown further: a cloud that recovers meanwhile is probed within a cooldown."""
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.failure()
    clock.now += 2.0
    assert b.allow()
    clock.now += 1.5
    b.failure()  # the probe timed out
    assert b.state == "open" and not b.allow()
    clock.now += 0.5  # 2 s after the failed probe was sent
    assert b.allow()


def test_a_probe_that_never_reports_back_is_replaced_after_a_cooldown():
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.failure()
    clock.now += 2.0
    assert b.allow()
    clock.now += 1.0
    assert not b.allow()
    clock.now += 1.0
    assert b.allow()


def test_rejects_nonsense_settings():
    with pytest.raises(ValueError):
        CircuitBreaker(failures=0)
