"""Triton's statistics and nv_inference_* metrics on the agent (no server): the stages of a
request, the version that answered after a hot update, failure reasons from 0."""

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.paths import family_dir
from edgecascade.cloud.common.preprocessing import InvalidImage
from edgecascade.edge.serving.agent import Deployment, EdgeAgent, failure_reason
from edgecascade.edge.serving.kserve import KServeService
from edgecascade.edge.serving.limits import InFlightLimit, Overloaded
from edgecascade.edge.serving.metrics import Metrics
from edgecascade.edge.serving.settings import EdgeSettings
from edgecascade.edge.serving.statistics import Stamps, Statistics
from edgecascade.router.cascade.cascade import Answers
from tests.family_files import copy_family
from tests.unit.test_cascade_routing import manifest
from tests.unit.test_kserve_requests import request


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("nv_inference")
        for s in family.samples
    }


def value(metrics: Metrics, name: str, model: str = "toy", **labels: str) -> float:
    wanted = tuple(sorted({"model": model, **labels}.items()))
    return samples(metrics)[name, wanted]


def answers(pair, n: int) -> Answers:
    return Answers(
        pair,
        probabilities=np.full((n, 3), 1 / 3),
        edge_confidence=np.full(n, 0.9),
        edge_class_id=np.zeros(n, int),
        escalated=np.zeros(n, bool),
        edge_ms=1.0,
        cloud_ms=0.0,
        degraded_reason=None,
        bytes_per_escalation=0,
    )


def test_stamps_split_a_request_into_triton_stages():
    stamps = Stamps(received=100, admitted=150, decoded=400, inferred=1400, responded=1500)
    assert stamps.stages() == {
        "queue": 50,
        "compute_input": 250,
        "compute_infer": 1000,
        "compute_output": 100,
    }
    statistics = Statistics("toy", "1")
    statistics.succeeded("1", 4, stamps)
    statistics.failed("1", "REJECTED", 30)
    (stats,) = statistics.response().model_stats
    assert (stats.inference_count, stats.execution_count) == (4, 1)
    assert (stats.inference_stats.success.count, stats.inference_stats.success.ns) == (1, 1400)
    assert (stats.inference_stats.fail.count, stats.inference_stats.fail.ns) == (1, 30)
    assert stats.inference_stats.compute_infer.ns == 1000 and stats.last_inference > 0
    (batch,) = stats.batch_stats
    assert batch.batch_size == 4 and batch.compute_output.ns == 100


def test_after_a_hot_update_the_new_version_counts():
    """Issue 15: after an update to version 2, nv_inference_count{version="1"} kept counting."""
    one = manifest()
    two = one.model_copy(update={"version": 2})
    metrics = Metrics(one, lambda: 0)
    metrics.answered(answers(one, 2), Stamps(0, 1, 2, 3, 4))
    metrics.serving(two)
    assert value(metrics, "nv_inference_count_total", version="2") == 0  # there from the swap
    metrics.answered(answers(two, 3), Stamps(0, 1, 2, 3, 4))
    assert value(metrics, "nv_inference_count_total", version="1") == 2
    assert value(metrics, "nv_inference_count_total", version="2") == 3
    assert value(metrics, "nv_inference_exec_count_total", version="2") == 1
    assert [s.version for s in metrics.statistics.response().model_stats] == ["1", "2"]
    assert metrics.statistics.response("2").model_stats[0].inference_count == 3


def test_failure_reasons_are_tritons_and_start_at_0():
    metrics = Metrics(manifest(), lambda: 0)
    failures = {
        dict(labels)["reason"]: v
        for (name, labels), v in samples(metrics).items()
        if name == "nv_inference_request_failure_total"
    }
    assert failures == {"REJECTED": 0, "CANCELED": 0, "BACKEND": 0, "OTHER": 0}
    assert failure_reason(Overloaded("full")) == "REJECTED"
    assert failure_reason(InvalidImage("junk")) == "OTHER"
    assert failure_reason(asyncio.CancelledError()) == "CANCELED"
    assert failure_reason(ZeroDivisionError()) == "BACKEND"
    exposition = metrics.exposition().decode()
    assert "# TYPE nv_inference_request_failure counter" in exposition
    assert "nv_inference_request_failure_total" not in exposition  # Triton's name, no suffix


class Model:
    """An edge model whose variants are ready once folds_ready has returned."""

    def __init__(self) -> None:
        self.ready: list[list[tuple[int, ...]]] = []  # the shapes made ready, call by call

    async def folds_ready(self, images) -> None:
        await asyncio.sleep(0)
        self.ready.append([image.shape for image in images])


class SlowCascade:
    def __init__(self, pair):
        self.pair, self.gate = pair, asyncio.Event()

    async def classify_batch(self, images, **_):
        await self.gate.wait()
        return answers(self.pair, len(images))


def test_a_request_counts_under_the_version_it_started_on_and_pending_while_in_flight():
    one = manifest()
    two = one.model_copy(update={"version": 2})

    async def main() -> EdgeAgent:
        cascade = SlowCascade(one)
        metrics = Metrics(one, lambda: 0)
        agent = EdgeAgent(
            EdgeSettings(insecure=True),
            Deployment(one, Path(), Model(), cascade, None),
            InFlightLimit(4),
            metrics,
            breaker=None,
            latency=None,
        )
        image = [np.zeros((8, 8), np.uint8)]
        request = asyncio.ensure_future(
            agent.respond(lambda: image, len, received_at=time.perf_counter())
        )
        while metrics.statistics.versions["1"].pending == 0:
            await asyncio.sleep(0.001)
        assert value(metrics, "nv_inference_pending_request_count", version="1") == 1
        agent.deployment = Deployment(two, Path(), Model(), SlowCascade(two), None)  # swapped
        metrics.serving(two)
        cascade.gate.set()
        assert await request == 1  # what `build` made of the answers
        return agent

    agent = asyncio.run(main())
    stats = agent.metrics.statistics.versions
    assert stats["1"].success.count == 1 and stats["2"].success.count == 0
    assert stats["1"].pending == 0


@pytest.mark.parametrize("version", ["", "1"])
def test_statistics_of_every_version_or_one(version: str):
    statistics = Statistics("toy", "1")
    statistics.serving("2")
    names = [(s.name, s.version) for s in statistics.response(version).model_stats]
    assert names == ([("toy", "1"), ("toy", "2")] if not version else [("toy", "1")])


def test_a_real_hot_update_moves_the_counts_to_the_new_version(tmp_path):
    """The real fashion pair (OpenVINO), swapped for a copy published as version 2: KServe
    answers, statistics and nv_inference_* count under version 2 from the swap on."""
    folder = copy_family(tmp_path / "v2")
    two = Manifest.load(folder / "manifest.json").model_copy(update={"version": 2})
    two.save(folder / "manifest.json")
    settings = EdgeSettings.model_validate(
        {"family": "fashion", "insecure": True, "allow_unsigned": True}
    )
    message = request("pixels", "UINT8", [1, 28, 28, 1], bytes(784))
    message.model_name = "fashion"

    async def main() -> tuple[EdgeAgent, list[str]]:
        agent = await EdgeAgent.load(settings)
        service = KServeService(agent)
        versions = [(await service._infer(message, None)).model_version]
        await agent.activate(folder)
        versions.append((await service._infer(message, None)).model_version)
        return agent, versions

    agent, versions = asyncio.run(main())
    one = str(Manifest.load(family_dir("fashion") / "manifest.json").version)
    assert versions == [one, "2"]
    metrics = agent.metrics
    assert value(metrics, "nv_inference_count_total", model="fashion", version=one) == 1
    assert value(metrics, "nv_inference_count_total", model="fashion", version="2") == 1
    assert [s.version for s in metrics.statistics.response().model_stats] == sorted({one, "2"})
