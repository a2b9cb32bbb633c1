"""A batch through the cascade: one edge inference, one cloud call for the unsure subset only."""

import asyncio
import time

import numpy as np
import pytest

from edgecascade.router.cascade.breaker import CircuitBreaker
from edgecascade.router.cascade.cascade import Cascade
from edgecascade.router.cascade.cloud_client import CloudError
from edgecascade.router.cascade.degraded import DegradedReason
from edgecascade.router.cascade.latency import LatencyTracker
from edgecascade.router.policy.policies import MaxProbabilityPolicy
from tests.unit.test_cascade_routing import CLOUD, CONFIDENT, UNSURE, FakeCloud, manifest

# Image i is filled with the value i; the fake edge model looks its logits up by that value.
EDGE_LOGITS = np.stack([CONFIDENT, UNSURE, CONFIDENT, UNSURE])


def build(cloud, edge_calls: list, **kw) -> Cascade:
    async def edge(batch):
        edge_calls.append(batch)
        return EDGE_LOGITS[batch[:, 0, 0, 0]]

    return Cascade(manifest(), edge, MaxProbabilityPolicy(0.5), cloud, cloud_timeout_s=1.0, **kw)


def classify_batch(cascade: Cascade, images, deadline_s: float | None = None):
    now = time.perf_counter()
    deadline = None if deadline_s is None else now + deadline_s
    return asyncio.run(cascade.classify_batch(images, received_at=now, deadline=deadline))


def images(n: int = 4) -> list[np.ndarray]:
    return [np.full((32, 32), i, np.uint8) for i in range(n)]


def test_one_edge_inference_and_one_cloud_call_with_only_the_unsure_images():
    cloud, edge_calls = FakeCloud(), []
    answers = classify_batch(build(cloud, edge_calls), images())
    assert [b.shape for b in edge_calls] == [(4, 8, 8, 1)] and cloud.shapes == [(2, 16, 16, 1)]
    assert answers.tiers == ["edge", "cloud", "edge", "cloud"] and answers.degraded == 0
    each = [answers[i] for i in range(4)]
    assert [a.top_k(1)[0][0] for a in each] == [1, 2, 1, 2]  # the cloud's class for 1 and 3
    assert np.allclose(each[1].probabilities, np.exp(CLOUD))
    assert [a.edge_class_id for a in each] == [1, 0, 1, 0]
    assert [a.edge_confidence for a in each] == pytest.approx([0.9, 0.4, 0.9, 0.4])
    assert [a.bytes_to_cloud for a in each] == [0, 256, 0, 256]
    assert each[0].cloud_ms == 0.0 and each[1].cloud_ms > 0.0


def test_a_cloud_failure_degrades_only_the_escalated_images_and_counts_once():
    cloud = FakeCloud(CloudError(DegradedReason.CLOUD_UNAVAILABLE, "down"))
    c = build(cloud, [], breaker=CircuitBreaker(failures=2, cooldown_s=60))
    answers = classify_batch(c, images())
    assert [answers[i].degraded_reason for i in range(4)] == [
        None,
        "cloud-unavailable",
        None,
        "cloud-unavailable",
    ]
    assert answers.tiers == ["edge"] * 4 and answers.degraded == 2
    assert [answers[i].top_k(1)[0][0] for i in range(4)] == [1, 0, 1, 0]  # the edge's answers
    assert [answers[i].bytes_to_cloud for i in range(4)] == [0, 256, 0, 256]  # they were sent
    assert c.breaker.state == "closed", "one failed call, not one per escalated image"


def test_no_cloud_call_when_the_expected_latency_does_not_fit_the_deadline():
    latency = LatencyTracker(probe_interval_s=60)
    for _ in range(20):
        latency.record(0.080)
    assert latency.admit(0.050)  # the probe of the interval has gone
    cloud = FakeCloud()
    answers = classify_batch(build(cloud, [], latency=latency), images(), deadline_s=0.050)
    assert cloud.shapes == [] and answers.degraded_reason == "deadline"
    assert [answers[i].degraded for i in range(4)] == [False, True, False, True]
    assert [answers[i].bytes_to_cloud for i in range(4)] == [0] * 4


def test_a_batch_array_at_the_edge_size_goes_to_the_edge_model_as_it_is():
    cloud, edge_calls = FakeCloud(), []
    batch = np.stack([np.full((8, 8, 1), i, np.uint8) for i in (0, 2)])
    answers = classify_batch(build(cloud, edge_calls), batch)
    assert np.shares_memory(edge_calls[0], batch) and cloud.shapes == []  # both confident
    assert answers.tiers == ["edge", "edge"] and answers.cloud_ms == 0.0


def test_a_mirroring_policy_infers_both_views_at_once_and_answers_for_the_image_as_given():
    """Images whose left half holds i and right half 255 - i, so the fake model tells the views
    apart: a mirrored image 2 reads 253 and the model then backs class 0 (unsure)."""

    async def edge(batch):
        calls.append(batch)
        value = batch[:, 0, 0, 0].astype(int)
        return np.where((value < 4)[:, None], EDGE_LOGITS[value % 4], UNSURE)

    calls: list[np.ndarray] = []
    halves = [np.concatenate([np.full((32, 16), i), np.full((32, 16), 255 - i)], 1) for i in (0, 2)]
    policy = MaxProbabilityPolicy(0.7, mirror=True)
    cascade = Cascade(manifest(), edge, policy, FakeCloud(), cloud_timeout_s=1.0)
    answers = classify_batch(cascade, [h.astype(np.uint8) for h in halves])
    assert [b.shape for b in calls] == [(4, 8, 8, 1)]  # 2 images + their mirrors, one inference
    assert calls[0][:, 0, 0, 0].tolist() == [0, 2, 255, 253]
    # Both answered CONFIDENT (0.9 on class 1) as given; their mirrors are UNSURE (0.35 on 1).
    assert [answers[i].edge_class_id for i in range(2)] == [1, 1]
    assert answers.edge_confidence == pytest.approx([(0.9 + 0.35) / 2] * 2)
    assert answers.tiers == ["cloud", "cloud"]  # unmirrored, 0.9 would stay at the edge


def test_an_ensemble_model_answers_with_the_mean_of_every_member_and_view():
    """A two-member fake model: member 0 is sure of its answer, member 1 (and every mirrored
    view) is not; one inference of the images and their mirrors gives all four views."""

    async def edge(batch):
        calls.append(batch)
        mirrored = batch[:, 0, 0, 0] >= 128
        member0 = np.where(mirrored[:, None], UNSURE, CONFIDENT)
        return np.stack([member0, np.tile(UNSURE, (len(batch), 1))], axis=1)

    calls: list[np.ndarray] = []
    halves = [np.concatenate([np.full((32, 16), 0), np.full((32, 16), 255)], 1).astype(np.uint8)]
    scores = {}
    for mirror in (False, True):
        policy = MaxProbabilityPolicy(0.7, mirror=mirror, ensemble=True)
        cascade = Cascade(manifest(), edge, policy, FakeCloud(), cloud_timeout_s=1.0)
        answers = classify_batch(cascade, halves)
        assert answers.edge_class_id.tolist() == [1]  # every view's top class
        scores[mirror] = float(answers.edge_confidence[0])
    assert [b.shape[0] for b in calls] == [1, 2]
    # Views backing class 1 with 0.9 (member 0 as given) and 0.35 (the others).
    assert scores == pytest.approx({False: (0.9 + 0.35) / 2, True: (0.9 + 3 * 0.35) / 4})
    # Kept at the edge, the answer's probabilities are that mean.
    never = MaxProbabilityPolicy(0.0, mirror=True, ensemble=True)
    kept = classify_batch(Cascade(manifest(), edge, never, FakeCloud()), halves)
    assert kept.tiers == ["edge"]
    assert kept.probabilities[0].max() == pytest.approx(scores[True])
