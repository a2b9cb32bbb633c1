"""The cascade's latency budget and circuit breaker with a fake edge model and fake cloud."""

import asyncio
import time

import numpy as np

from edgecascade.router.cascade.breaker import CircuitBreaker
from edgecascade.router.cascade.cascade import ANSWER_RESERVE_S, Cascade
from edgecascade.router.cascade.cloud_client import CloudError
from edgecascade.router.cascade.degraded import DegradedReason
from edgecascade.router.cascade.latency import PROBE_INTERVAL_S, LatencyTracker
from edgecascade.router.policy.policies import MaxProbabilityPolicy
from tests.unit.test_cascade_routing import UNSURE, FakeCloud, manifest


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def build(cloud, **kw) -> Cascade:
    async def edge(batch):
        return np.tile(UNSURE, (len(batch), 1))

    return Cascade(manifest(), edge, MaxProbabilityPolicy(0.5), cloud, cloud_timeout_s=1.0, **kw)


def classify(cascade: Cascade, deadline_s: float | None = None):
    now = time.perf_counter()
    deadline = None if deadline_s is None else now + deadline_s
    image = np.zeros((32, 32), np.uint8)
    return asyncio.run(cascade.classify(image, received_at=now, deadline=deadline))


def test_escalates_only_when_the_expected_cloud_latency_fits_the_time_left():
    latency = LatencyTracker(probe_interval_s=60)
    for _ in range(20):
        latency.record(0.080)
    cloud = FakeCloud()
    c = build(cloud, latency=latency)
    # 0.1 s less the reserve to answer in leaves less than the 80 ms the cloud takes
    assert classify(c, deadline_s=0.100).tier == "cloud"  # the probe of the interval
    cloud.timeouts.clear()
    answer = classify(c, deadline_s=0.100)
    assert answer.degraded_reason == "deadline" and answer.tier == "edge" and cloud.timeouts == []
    assert answer.bytes_to_cloud == 0
    assert classify(c, deadline_s=0.500).tier == "cloud"
    # the time left goes on to the cloud call, less the time kept to answer in
    assert 0.08 < cloud.timeouts[0] <= 0.5 - ANSWER_RESERVE_S


class StalledCloud(FakeCloud):
    """Every call times out (after `wait` x its timeout) until it recovers."""

    def __init__(self, wait: float = 0.0):
        super().__init__(CloudError(DegradedReason.CLOUD_TIMEOUT, "stalled"))
        self.wait = wait

    async def infer_batch(self, batch, timeout_s):
        if self.error:
            await asyncio.sleep(self.wait * timeout_s)
        return await super().infer_batch(batch, timeout_s)

    def recover(self):
        self.error = None


def test_a_stalled_cloud_is_probed_and_used_again_as_soon_as_a_probe_gets_through():
    """Before: the timeouts stayed in the window as 1 s samples, so no call fitted a 0.3 s
    budget until they aged out (30 s) and nothing tried the cloud meanwhile."""
    clock = Clock()
    cloud = StalledCloud()
    c = build(cloud, latency=LatencyTracker(clock=clock), breaker=CircuitBreaker(clock=clock))
    for _ in range(5):  # stream frames: no budget but the full cloud timeout; the breaker opens
        assert classify(c).degraded_reason == "cloud-timeout"
    assert c.breaker.state == "open" and c.latency.stalled
    cloud.recover()
    calls = len(cloud.timeouts)
    assert classify(c, deadline_s=0.3).degraded_reason == "cloud-unavailable"
    assert len(cloud.timeouts) == calls  # held back while open
    clock.now += 0.5  # the default cooldown: the next request is the breaker's probe
    assert classify(c, deadline_s=0.3).tier == "cloud"
    assert c.breaker.state == "closed" and not c.latency.stalled
    assert c.latency.expected_s() < 0.1  # the timeouts no longer count
    assert all(classify(c, deadline_s=0.3).tier == "cloud" for _ in range(5))


def test_timeouts_within_short_budgets_are_probed_every_interval():
    """Calls with a 0.3 s budget that time out do not open the breaker, but they make the cloud
    too slow for the next one: a probe still goes every PROBE_INTERVAL_S."""
    clock = Clock()
    cloud = StalledCloud(wait=1.0)
    latency = LatencyTracker(clock=clock)
    c = build(cloud, latency=latency, breaker=CircuitBreaker(clock=clock))
    assert classify(c, deadline_s=0.3).degraded_reason == "cloud-timeout"
    assert c.breaker.state == "closed" and latency.stalled
    cloud.timeouts.clear()
    clock.now += 0.001
    cloud.recover()
    assert classify(c, deadline_s=0.3).degraded_reason == "deadline" and cloud.timeouts == []
    clock.now += PROBE_INTERVAL_S
    assert classify(c, deadline_s=0.3).tier == "cloud" and not latency.stalled
    assert classify(c, deadline_s=0.3).tier == "cloud"


def test_successful_calls_feed_the_latency_tracker():
    c = build(FakeCloud())
    classify(c)
    assert c.latency.ewma_s is not None and c.latency.p95_s < 0.1


def test_repeated_failures_open_the_breaker_and_stop_cloud_calls():
    cloud = FakeCloud(CloudError(DegradedReason.CLOUD_UNAVAILABLE, "down"))
    c = build(cloud, breaker=CircuitBreaker(failures=3, cooldown_s=60))
    reasons = [classify(c).degraded_reason for _ in range(6)]
    assert reasons == ["cloud-unavailable"] * 6
    assert len(cloud.timeouts) == 3 and c.breaker.state == "open"


def test_a_half_open_probe_that_succeeds_closes_the_breaker():
    cloud = FakeCloud(CloudError(DegradedReason.CLOUD_ERROR, "500"))
    c = build(cloud, breaker=CircuitBreaker(failures=2, cooldown_s=0.0))
    classify(c), classify(c)
    assert c.breaker.state == "half-open"
    cloud.error = None
    assert classify(c).tier == "cloud" and c.breaker.state == "closed"


def test_a_timeout_cut_short_by_the_callers_budget_does_not_count_against_the_cloud():
    cloud = FakeCloud(CloudError(DegradedReason.CLOUD_TIMEOUT, "slow"))
    c = build(cloud, breaker=CircuitBreaker(failures=1, cooldown_s=60))
    assert classify(c, deadline_s=0.3).degraded_reason == "cloud-timeout"
    assert c.breaker.state == "closed" and c.latency.ewma_s is not None
    assert classify(c).degraded_reason == "cloud-timeout"  # the full cloud timeout: it counts
    assert c.breaker.state == "open"


def test_timeouts_of_budgets_the_cloud_used_to_fit_open_the_breaker():
    """Unary calls with a 0.3 s deadline to a cloud that answered in 3 ms, all timing out: the
    breaker opens (GetStatus says so), where such timeouts used to leave it closed."""
    clock = Clock()
    latency = LatencyTracker(clock=clock)
    for _ in range(20):
        latency.record(0.003)
    cloud = StalledCloud()
    c = build(cloud, latency=latency, breaker=CircuitBreaker(failures=3, clock=clock))
    for _ in range(3):
        assert classify(c, deadline_s=0.3).degraded_reason == "cloud-timeout"
        clock.now += PROBE_INTERVAL_S
    assert c.breaker.state == "open"
