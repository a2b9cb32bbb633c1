"""The cascade's routing decisions with a fake edge model and a fake cloud (no servers)."""

import asyncio
import time

import numpy as np
import pytest

from edgecascade.cloud.common.manifest import (
    Manifest,
    ModelSpec,
    Preprocessing,
    RoutingPolicy,
    labels_sha256,
)
from edgecascade.router.cascade.cascade import Cascade
from edgecascade.router.cascade.cloud_client import CloudError
from edgecascade.router.cascade.degraded import DegradedReason
from edgecascade.router.policy.policies import MaxProbabilityPolicy

LABELS = ["a", "b", "c"]
CONFIDENT = np.log(np.array([0.05, 0.9, 0.05]))
UNSURE = np.log(np.array([0.4, 0.35, 0.25]))
CLOUD = np.log(np.array([0.1, 0.1, 0.8]))


def manifest() -> Manifest:
    def spec(name: str, size: int) -> ModelSpec:
        return ModelSpec(
            name=name,
            version=1,
            precision="fp32",
            files={},
            preprocessing=Preprocessing(color="gray", size=size, resize_short=size),
        )

    return Manifest(
        family="toy",
        version=1,
        created="now",
        labels=LABELS,
        labels_sha256=labels_sha256(LABELS),
        edge=spec("toy_edge", 8),
        cloud=spec("toy_cloud", 16),
        policy=RoutingPolicy(threshold=0.5),
    )


class FakeCloud:
    def __init__(self, error: CloudError | None = None):
        self.error, self.shapes, self.timeouts = error, [], []

    async def infer_batch(self, batch, timeout_s):
        self.shapes.append(batch.shape)
        self.timeouts.append(timeout_s)
        if self.error:
            raise self.error
        return np.tile(CLOUD, (len(batch), 1))


def run(cascade: Cascade, deadline_s=None):
    image = np.zeros((32, 32), np.uint8)
    now = time.perf_counter()
    deadline = None if deadline_s is None else now + deadline_s
    return asyncio.run(cascade.classify(image, received_at=now, deadline=deadline))


def cascade(edge_logits, cloud, timeout=1.0) -> Cascade:
    async def edge(batch):
        assert batch.shape[1:] == (8, 8, 1)  # the edge spec, not the cloud's
        return np.tile(edge_logits, (len(batch), 1))

    return Cascade(manifest(), edge, MaxProbabilityPolicy(0.5), cloud, cloud_timeout_s=timeout)


def test_confident_input_is_answered_at_the_edge_without_calling_the_cloud():
    cloud = FakeCloud()
    answer = run(cascade(CONFIDENT, cloud))
    assert answer.tier == "edge" and not answer.degraded and cloud.shapes == []
    assert answer.edge_confidence == pytest.approx(0.9) and answer.top_k(1)[0][0] == 1


def test_unsure_input_goes_to_the_cloud_in_the_cloud_spec():
    cloud = FakeCloud()
    answer = run(cascade(UNSURE, cloud))
    assert answer.tier == "cloud" and answer.top_k(1) == [(2, pytest.approx(0.8))]
    assert answer.edge_class_id == 0 and answer.edge_confidence == pytest.approx(0.4)
    assert cloud.shapes == [(1, 16, 16, 1)] and answer.bytes_to_cloud == 256


@pytest.mark.parametrize(
    "reason",
    [DegradedReason.CLOUD_UNAVAILABLE, DegradedReason.CLOUD_TIMEOUT, DegradedReason.CLOUD_ERROR],
)
def test_cloud_failure_returns_the_edge_answer_degraded(reason):
    answer = run(cascade(UNSURE, FakeCloud(CloudError(reason, "boom"))))
    assert answer.tier == "edge" and answer.degraded_reason == reason
    assert answer.top_k(1)[0][0] == 0


def test_no_cloud_configured_is_cloud_unavailable():
    assert run(cascade(UNSURE, None)).degraded_reason == "cloud-unavailable"


def test_cloud_call_gets_the_time_left_and_none_when_nothing_is_left():
    cloud = FakeCloud()
    run(cascade(UNSURE, cloud, timeout=1.0), deadline_s=0.2)
    assert 0 < cloud.timeouts[0] <= 0.2
    answer = run(cascade(UNSURE, cloud), deadline_s=0.0)
    assert answer.degraded_reason == "deadline" and len(cloud.timeouts) == 1
