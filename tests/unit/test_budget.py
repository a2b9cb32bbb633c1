"""The escalation budget: a token bucket per second and a ceiling per UTC day; over it the
cascade answers at the edge, degraded with reason `budget`, until it refills."""

from __future__ import annotations

import numpy as np

from edgecascade.router.cascade.budget import DAY_S, EscalationBudget
from edgecascade.router.cascade.cascade import Cascade
from edgecascade.router.cascade.degraded import DegradedReason
from edgecascade.router.policy.policies import MaxProbabilityPolicy
from edgecascade.v1 import cascade_pb2 as pb
from tests.unit.test_cascade_routing import UNSURE, FakeCloud, manifest, run


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_bucket_allows_its_burst_then_refills_at_its_rate() -> None:
    clock = Clock()
    budget = EscalationBudget(per_second=2, burst=3, clock=clock, wall=Clock(5.0))
    assert [budget.take() for _ in range(4)] == [True, True, True, False]
    clock.now = 0.4  # 0.8 of a token back: not one yet
    assert not budget.take()
    clock.now = 0.5
    assert budget.take() and not budget.take()
    clock.now = 100.0  # refills up to the burst, no more
    assert [budget.take() for _ in range(4)] == [True, True, True, False]


def test_a_batch_takes_all_its_tokens_or_none() -> None:
    budget = EscalationBudget(per_second=1, burst=3, clock=Clock(), wall=Clock())
    assert not budget.take(4)
    assert budget.take(3) and not budget.take(1)


def test_the_daily_ceiling_holds_within_a_utc_day_and_resets_at_the_next() -> None:
    wall = Clock(10 * DAY_S + 100)
    budget = EscalationBudget(per_day=2, clock=Clock(), wall=wall)
    assert [budget.take() for _ in range(3)] == [True, True, False]
    wall.now = 11 * DAY_S - 1
    assert not budget.take()
    wall.now = 11 * DAY_S
    assert budget.take() and budget.spent_today == 1


def test_over_budget_the_cascade_answers_at_the_edge_with_reason_budget_and_recovers() -> None:
    clock, cloud = Clock(), FakeCloud()

    async def edge(batch: np.ndarray) -> np.ndarray:
        return np.tile(UNSURE, (len(batch), 1))

    budget = EscalationBudget(per_second=1, burst=1, clock=clock)
    cascade = Cascade(manifest(), edge, MaxProbabilityPolicy(0.5), cloud, budget=budget)  # type: ignore[arg-type]
    first, second = run(cascade), run(cascade)
    assert first.tier == "cloud" and not first.degraded
    assert second.tier == "edge" and second.degraded_reason is DegradedReason.BUDGET
    assert second.degraded_reason_code == pb.BUDGET and len(cloud.shapes) == 1
    clock.now = 1.0
    assert run(cascade).tier == "cloud" and len(cloud.shapes) == 2
