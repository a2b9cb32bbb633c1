"""Collection at the edge: the cascade hands every input the cloud answered to the Collector,
which keeps it (the prepared edge input, both tiers' probabilities) in the bounded store from its
own thread, never blocking the caller."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np

from edgecascade.cloud.common.examples import ExampleStore, image_sha256
from edgecascade.cloud.common.preprocessing import prepare_batch
from edgecascade.cloud.common.probabilities import softmax
from edgecascade.edge.serving.collection import Collector
from edgecascade.router.cascade.audit import Auditor
from edgecascade.router.cascade.cascade import Cascade
from edgecascade.router.policy.policies import MaxProbabilityPolicy
from tests.unit.test_cascade_routing import CLOUD, CONFIDENT, UNSURE, FakeCloud, manifest


def images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (32, 32), np.uint8) for _ in range(n)]


def cascade(edge_logits: np.ndarray, collector: Collector, auditor: Auditor | None = None):
    async def edge(batch: np.ndarray) -> np.ndarray:
        return np.tile(edge_logits, (len(batch), 1))

    return Cascade(
        manifest(), edge, MaxProbabilityPolicy(0.5), FakeCloud(), auditor=auditor, sink=collector
    )


def classify_all(c: Cascade, frames: list[np.ndarray]) -> None:
    async def main() -> None:
        for frame in frames:
            await c.classify(frame, received_at=time.perf_counter())
        if c.auditor:
            await c.auditor.drain()

    asyncio.run(main())


def test_escalated_inputs_are_kept_with_both_tiers_probabilities(tmp_path: Path) -> None:
    collector = Collector(ExampleStore(tmp_path / "examples.sqlite", 1 << 20))
    frames = images(5)
    classify_all(cascade(UNSURE, collector), frames)
    collector.flush()
    kept = list(collector.store.examples())
    assert len(kept) == 5 and collector.kept == 5
    for example in kept:
        assert example.kind == "escalated" and example.family == "toy"
        assert example.edge_version == "toy_edge:1"
        assert example.image.shape == (8, 8, 1)  # the edge model's input, not the frame
        assert example.sha256 == image_sha256(example.image)
        np.testing.assert_allclose(example.cloud_probabilities, softmax(CLOUD), rtol=1e-6)
        np.testing.assert_allclose(example.edge_probabilities, softmax(UNSURE), rtol=1e-6)
    classify_all(cascade(UNSURE, collector), frames[:2])  # seen again: kept once
    collector.flush()
    assert len(collector.store) == 5 and collector.duplicates == 2
    collector.close()


def test_audited_inputs_are_kept_as_audits_and_confident_ones_are_not_kept(
    tmp_path: Path,
) -> None:
    collector = Collector(ExampleStore(tmp_path / "examples.sqlite", 1 << 20))
    classify_all(cascade(CONFIDENT, collector), images(4))
    classify_all(cascade(CONFIDENT, collector, Auditor(rate=1.0)), images(3, seed=1))
    collector.flush()
    assert [e.kind for e in collector.store.examples()] == ["audit"] * 3
    collector.close()


def test_the_store_keeps_its_cap_dropping_the_oldest(tmp_path: Path) -> None:
    one = 8 * 8 + 2 * 4 * 3  # bytes per toy example
    collector = Collector(ExampleStore(tmp_path / "examples.sqlite", 10 * one))
    frames = images(25)
    classify_all(cascade(UNSURE, collector), frames)
    collector.flush()
    assert len(collector.store) == 10 and collector.store.size_bytes() <= 10 * one
    prepared = prepare_batch(frames, manifest().edge.preprocessing)
    newest = [image_sha256(image) for image in prepared[-10:]]
    assert [e.sha256 for e in collector.store.examples()] == newest
    collector.close()


def test_a_full_queue_drops_instead_of_blocking(tmp_path: Path) -> None:
    store = ExampleStore(tmp_path / "examples.sqlite", 1 << 20)
    collector = Collector(store, max_queued=1)
    pair, probabilities = manifest(), np.tile(softmax(CLOUD), (1, 1))
    start = time.perf_counter()
    for frame in images(200):
        collector.collect("escalated", pair, [frame], probabilities, probabilities)
    assert time.perf_counter() - start < 0.5
    collector.flush()
    assert collector.dropped > 0 and collector.kept + collector.dropped == 200
    collector.close()
