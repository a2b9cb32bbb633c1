"""Degraded reasons are one enumeration: the wire contract's, the code's and the metrics'."""

from __future__ import annotations

import ast
import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from numpy.typing import NDArray

from edgecascade.edge.serving.metrics import Metrics
from edgecascade.edge.serving.statistics import Stamps
from edgecascade.router.cascade.breaker import CircuitBreaker
from edgecascade.router.cascade.cascade import Answers, Cascade
from edgecascade.router.cascade.cloud_client import CloudError, _reason
from edgecascade.router.cascade.degraded import DegradedReason
from edgecascade.v1 import cascade_pb2 as pb
from tests.unit.test_cascade_routing import UNSURE, FakeCloud, cascade, manifest, run

ROOT = Path(__file__).resolve().parents[2]
WIRE = {
    value.name: value.number
    for value in pb.DESCRIPTOR.enum_types_by_name["DegradedReason"].values
    if value.number != pb.DEGRADED_REASON_UNSPECIFIED
}


def test_the_code_has_one_member_per_wire_value_with_its_text_form() -> None:
    assert {reason.name: reason.code for reason in DegradedReason} == WIRE
    for reason in DegradedReason:
        assert reason.value == reason.name.lower().replace("_", "-")


@pytest.mark.parametrize("status", list(grpc.StatusCode))
def test_every_cloud_failure_maps_to_a_member(status: grpc.StatusCode) -> None:
    assert isinstance(_reason(str(status)), DegradedReason)


def reasons_produced() -> set[DegradedReason | None]:
    """The reason of an unsure input in every situation the cascade knows."""
    produced = {run(cascade(UNSURE, None)).degraded_reason}  # no cloud
    for reason in DegradedReason:  # each failure the cloud client reports
        produced.add(run(cascade(UNSURE, FakeCloud(CloudError(reason, "")))).degraded_reason)
    produced.add(run(cascade(UNSURE, FakeCloud()), deadline_s=0.0).degraded_reason)
    mismatched = cascade(UNSURE, FakeCloud())
    mismatched.mismatch = "no such version"
    produced.add(run(mismatched).degraded_reason)
    open_breaker = cascade(UNSURE, FakeCloud())
    open_breaker.breaker = CircuitBreaker(failures=1, cooldown_s=60)
    open_breaker.breaker.failure()
    produced.add(run(open_breaker).degraded_reason)
    return produced


def test_every_reason_the_cascade_produces_is_a_member() -> None:
    produced = reasons_produced()
    assert produced == set(DegradedReason)
    assert all(type(reason) is DegradedReason for reason in produced)


def strings(path: Path) -> list[ast.Constant]:
    """The string constants of a module but for the names in its `__all__`."""
    tree = ast.parse(path.read_text())
    exported = {
        id(node)
        for statement in tree.body
        if isinstance(statement, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "__all__" for t in statement.targets)
        for node in ast.walk(statement.value)
    }
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in exported
    ]


def test_no_module_spells_a_reason_as_a_free_string() -> None:
    texts = {reason.value for reason in DegradedReason}
    free = [
        f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}"
        for tier in ("edge", "router", "cloud")
        for path in (ROOT / tier).rglob("*.py")
        if path.name != "degraded.py"
        for node in strings(path)
        if node.value in texts
    ]
    assert not free, f"use DegradedReason instead: {free}"


def test_the_response_carries_the_wire_code() -> None:
    answer = run(cascade(UNSURE, FakeCloud(CloudError(DegradedReason.CLOUD_TIMEOUT, ""))))
    assert answer.degraded_reason_code == pb.CLOUD_TIMEOUT
    assert run(cascade(UNSURE, FakeCloud())).degraded_reason_code == (
        pb.DEGRADED_REASON_UNSPECIFIED
    )


def degraded_samples(metrics: Metrics) -> dict[str, float]:
    return {
        sample.labels["reason"]: sample.value
        for family in metrics.registry.collect()
        if family.name == "edgecascade_degraded"
        for sample in family.samples
        if sample.name == "edgecascade_degraded_total"
    }


def test_metric_labels_are_the_members_and_count_degraded_inputs() -> None:
    metrics = Metrics(manifest(), lambda: 0)
    assert degraded_samples(metrics) == {reason.value: 0.0 for reason in DegradedReason}
    two = Cascade(manifest(), _unsure_edge, cascade(UNSURE, None).policy, None)
    answers = asyncio.run(
        two.classify_batch([np.zeros((8, 8), np.uint8)] * 2, received_at=time.perf_counter())
    )
    assert isinstance(answers, Answers) and answers.degraded == 2
    metrics.answered(answers, Stamps(0, 1, 2, 3, 4))
    counted = degraded_samples(metrics)
    assert counted.pop(DegradedReason.CLOUD_UNAVAILABLE.value) == 2.0
    assert set(counted.values()) == {0.0}


async def _unsure_edge(batch: NDArray[Any]) -> NDArray[Any]:
    return np.tile(UNSURE, (len(batch), 1))
