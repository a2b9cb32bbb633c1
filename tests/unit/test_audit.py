"""The audit of confident edge answers: sampled at its rate, run in the background (a slow cloud
never delays an answer), within the escalation budget, and the agreement with its interval."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np
import pytest

from edgecascade.cloud.common.manifest import Manifest
from edgecascade.router.cascade.audit import AgreementTracker, Auditor, wilson_interval
from edgecascade.router.cascade.budget import EscalationBudget
from edgecascade.router.cascade.cascade import Cascade
from edgecascade.router.policy.policies import MaxProbabilityPolicy
from tests.unit.test_cascade_routing import CLOUD, CONFIDENT, manifest


class SlowCloud:
    """Answers class 2 (or the edge's class 1 when `agree`) after `delay_s`."""

    def __init__(self, delay_s: float, agree: bool = False) -> None:
        self.delay_s, self.agree, self.calls = delay_s, agree, 0

    async def infer_batch(self, batch: np.ndarray, timeout_s: float) -> np.ndarray:
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        return np.tile(CONFIDENT if self.agree else CLOUD, (len(batch), 1))


class Sink:
    def __init__(self) -> None:
        self.kept: list[tuple[str, int]] = []

    def collect(self, kind: str, pair: Manifest, images: list[Any], *probabilities: Any) -> None:
        self.kept.append((kind, len(images)))


def confident_cascade(cloud: Any, auditor: Auditor, **kwargs: Any) -> Cascade:
    async def edge(batch: np.ndarray) -> np.ndarray:
        return np.tile(CONFIDENT, (len(batch), 1))

    return Cascade(manifest(), edge, MaxProbabilityPolicy(0.5), cloud, auditor=auditor, **kwargs)


def test_the_wilson_interval_matches_known_values() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lower, upper = wilson_interval(8, 10)
    assert lower == pytest.approx(0.4902, abs=1e-3) and upper == pytest.approx(0.9433, abs=1e-3)
    assert wilson_interval(100, 100)[1] == 1.0 and wilson_interval(100, 100)[0] > 0.96
    for n in range(1, 300):  # no rounding below the ends
        assert wilson_interval(n, n)[1] == 1.0 and wilson_interval(0, n)[0] == 0.0


def test_a_slow_cloud_never_delays_an_answer_while_audits_run_in_the_background() -> None:
    cloud, sink = SlowCloud(1.0), Sink()
    auditor = Auditor(rate=1.0, max_pending=100)
    cascade = confident_cascade(cloud, auditor, sink=sink)
    image = np.zeros((32, 32), np.uint8)

    async def main() -> tuple[list[float], float]:
        answered = []
        for _ in range(20):
            start = time.perf_counter()
            answer = await cascade.classify(image, received_at=start)
            answered.append(time.perf_counter() - start)
            assert answer.tier == "edge" and not answer.degraded
        start = time.perf_counter()
        await auditor.drain()
        return answered, time.perf_counter() - start

    answered, drained = asyncio.run(main())
    assert max(answered) < 0.1  # edge time, not the cloud's 1 s
    assert drained > 0.5 and cloud.calls == 20  # the audits were still running, and all ran
    entry = auditor.tracker.entries[("toy", "toy_edge:1")]
    assert (entry.audited, entry.agreed) == (20, 0)
    assert sink.kept == [("audit", 1)] * 20


def test_the_sampler_picks_about_its_rate_of_confident_answers_only() -> None:
    auditor = Auditor(rate=0.1, seed=1)
    confident = np.arange(20000) % 2 == 0
    picked = auditor.sample(confident)
    assert not picked[~confident].any()
    assert 900 < picked.sum() < 1100


def test_audits_are_within_the_budget_and_skipped_beyond_it_or_beyond_max_pending() -> None:
    cloud = SlowCloud(0.05, agree=True)
    budget = EscalationBudget(per_second=1e-9, burst=3)
    auditor = Auditor(rate=1.0, max_pending=2)
    cascade = confident_cascade(cloud, auditor, budget=budget)
    image = np.zeros((32, 32), np.uint8)

    async def main() -> None:
        for _ in range(3):  # 2 start, the third finds no room
            await cascade.classify(image, received_at=time.perf_counter())
        await auditor.drain()
        for _ in range(3):  # 1 token left: 1 starts, 2 over the budget
            await cascade.classify(image, received_at=time.perf_counter())
        await auditor.drain()

    asyncio.run(main())
    assert cloud.calls == 3 and auditor.skipped == 3
    assert auditor.tracker.entries[("toy", "toy_edge:1")].agreed == 3
    # what the three audits sent is counted (the agent adds it to GetStatus' bytes_to_cloud)
    assert auditor.bytes_sent == 3 * int(np.prod(manifest().cloud.preprocessing.shape))


def test_agreement_below_the_bound_is_warned_once(caplog: pytest.LogCaptureFixture) -> None:
    tracker = AgreementTracker(min_agreement=0.9)
    with caplog.at_level(logging.WARNING):
        entry = tracker.record("toy", "toy_edge:1", np.array([True, False]))
        assert not tracker.below(entry) and not caplog.records  # too few to tell
        tracker.record("toy", "toy_edge:1", np.array([True] * 10 + [False] * 20))
        tracker.record("toy", "toy_edge:1", np.array([False] * 5))
    assert tracker.below(entry) and len(caplog.records) == 1
    assert "below the bound 90.0%" in caplog.records[0].getMessage()
