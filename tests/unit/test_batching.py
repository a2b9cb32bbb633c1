"""The edge's dynamic batcher over a fake cascade: who goes together, and when."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from edgecascade.cloud.common.preprocessing import LARGE_PIXELS
from edgecascade.edge.serving.batching import Batched, Batcher, BatchPolicy
from edgecascade.router.cascade.cascade import Answers


class FakeCascade:
    """Answers each image with its own pixel value as the class; a 0-valued image fails; values
    over 100 escalate, and their batch's cloud call takes `cloud_seconds` after the edge's."""

    def __init__(self, seconds: float = 0.0, cloud_seconds: float = 0.0) -> None:
        self.batches: list[int] = []
        self.seconds = seconds
        self.cloud_seconds = cloud_seconds

    async def classify_batch(
        self, images: Any, *, received_at: float, deadline: Any, after_edge: Any = None
    ) -> Answers:
        assert not isinstance(images, np.ndarray) or images.ndim == 4
        self.batches.append(len(images))
        await asyncio.sleep(self.seconds)
        values = np.array([int(image.flat[0]) for image in images])
        if (values == 0).any():
            raise ValueError("a bad image")
        n = len(values)
        probabilities = np.eye(256)[values]
        escalated = values > 100
        if after_edge is not None:
            after_edge()
        if escalated.any():
            await asyncio.sleep(self.cloud_seconds)
        return Answers(
            None,  # type: ignore[arg-type]
            probabilities,
            np.ones(n),
            values,
            escalated,
            edge_ms=1.0,
            cloud_ms=2.0 if escalated.any() else 0.0,
            degraded_reason=None,
            bytes_per_escalation=10 if escalated.any() else 0,
        )


def image(value: int) -> np.ndarray[Any, Any]:
    return np.full((1, 4, 4, 1), value, np.uint8)


def run(batcher: Batcher, values: list[int]) -> list[Any]:
    async def all_at_once() -> list[Any]:
        calls = (
            batcher.classify(image(v), received_at=time.perf_counter(), deadline=None)
            for v in values
        )
        return await asyncio.gather(*calls, return_exceptions=True)

    return asyncio.run(all_at_once())


def test_requests_queued_at_once_share_one_execution_and_get_their_own_rows() -> None:
    cascade = FakeCascade()
    results = run(Batcher(cascade, BatchPolicy(max_batch=32)), list(range(1, 11)))  # type: ignore[arg-type]
    assert cascade.batches == [10]
    assert [int(r.answers.edge_class_id[0]) for r in results] == list(range(1, 11))
    assert [r.leader for r in results] == [True] + [False] * 9
    assert {r.batch for r in results} == {10}


def test_a_batch_is_capped_at_max_batch_and_instances_run_at_once() -> None:
    cascade = FakeCascade(0.01)
    policy = BatchPolicy(max_batch=4, instances=1)
    results = run(Batcher(cascade, policy), list(range(1, 11)))  # type: ignore[arg-type]
    assert cascade.batches == [4, 4, 2]
    assert [int(r.answers.edge_class_id[0]) for r in results] == list(range(1, 11))


def test_a_batch_frees_its_instance_while_it_waits_for_the_cloud() -> None:
    # One instance; the first request escalates to a cloud that takes 0.5 s. The edge answers
    # of the requests after it do not wait for that cloud call.
    cascade = FakeCascade(cloud_seconds=0.5)
    batcher = Batcher(cascade, BatchPolicy(instances=1))  # type: ignore[arg-type]
    done: dict[int, float] = {}

    async def staggered() -> None:
        start = time.perf_counter()

        async def one(value: int) -> None:
            await batcher.classify(image(value), received_at=start, deadline=None)
            done[value] = time.perf_counter() - start

        first = asyncio.ensure_future(one(200))
        await asyncio.sleep(0.05)  # the first batch is in its cloud call
        await asyncio.gather(first, one(1), one(2))

    asyncio.run(staggered())
    assert cascade.batches == [1, 2]
    assert done[1] < 0.3 and done[2] < 0.3 and done[200] >= 0.5


def test_off_each_request_runs_alone() -> None:
    cascade = FakeCascade()
    run(Batcher(cascade, BatchPolicy(enabled=False)), [1, 2, 3])  # type: ignore[arg-type]
    assert cascade.batches == [1, 1, 1]


def test_a_request_of_large_images_runs_alone_and_the_small_ones_batch_without_it() -> None:
    """Preparing a 9 MP frame took hundreds of ms on 2 busy cores, which every request batched
    with it waited for (a 28x28 frame up to 3.4 s)."""
    cascade = FakeCascade()
    side = int(LARGE_PIXELS**0.5) + 1
    large = np.full((1, side, side, 1), 9, np.uint8)

    async def together() -> list[Batched]:
        calls = [batcher.classify(im, received_at=0.0, deadline=None) for im in (large, *small)]
        return await asyncio.gather(*calls)

    batcher = Batcher(cascade, BatchPolicy())  # type: ignore[arg-type]
    small = [image(5), image(7)]
    results = asyncio.run(together())
    assert sorted(cascade.batches) == [1, 2]
    assert [r.batch for r in results] == [1, 2, 2]


def test_one_bad_request_gets_its_error_and_the_others_their_answers() -> None:
    cascade = FakeCascade()
    results = run(Batcher(cascade, BatchPolicy()), [5, 0, 7])  # type: ignore[arg-type]
    assert isinstance(results[1], ValueError)
    assert int(results[0].answers.edge_class_id[0]) == 5
    assert int(results[2].answers.edge_class_id[0]) == 7
    assert cascade.batches[0] == 3  # tried together first


def test_only_escalated_rows_carry_the_cloud_call() -> None:
    results = run(Batcher(FakeCascade(), BatchPolicy()), [5, 200])  # type: ignore[arg-type]
    assert (results[0].answers.cloud_ms, results[0].answers.bytes_per_escalation) == (0.0, 0)
    assert (results[1].answers.cloud_ms, results[1].answers.bytes_per_escalation) == (2.0, 10)


def test_the_queue_delay_is_waited_for_a_lone_request() -> None:
    batcher = Batcher(FakeCascade(), BatchPolicy(max_queue_delay_us=80_000))  # type: ignore[arg-type]
    start = time.perf_counter()
    [result] = run(batcher, [3])
    assert time.perf_counter() - start >= 0.08
    assert result.queued_ns >= 80_000_000


def test_later_requests_join_within_the_delay() -> None:
    cascade = FakeCascade()
    batcher = Batcher(cascade, BatchPolicy(max_queue_delay_us=100_000))  # type: ignore[arg-type]

    async def staggered() -> None:
        first = asyncio.ensure_future(batcher.classify(image(1), received_at=0.0, deadline=None))
        await asyncio.sleep(0.03)
        await asyncio.gather(first, batcher.classify(image(2), received_at=0.0, deadline=None))

    asyncio.run(staggered())
    assert cascade.batches == [2]


@pytest.mark.parametrize("preferred", [(3,), (2, 3)])
def test_a_preferred_size_goes_without_waiting_out_the_delay(preferred: tuple[int, ...]) -> None:
    cascade = FakeCascade()
    policy = BatchPolicy(max_queue_delay_us=5_000_000, preferred_sizes=preferred)
    start = time.perf_counter()
    run(Batcher(cascade, policy), [1, 2, 3])  # type: ignore[arg-type]
    assert time.perf_counter() - start < 1.0
    assert cascade.batches == [3]


def test_decoded_images_of_any_shape_go_together_as_a_list() -> None:
    cascade = FakeCascade()
    batcher = Batcher(cascade, BatchPolicy())  # type: ignore[arg-type]
    shapes = [(28, 28), (28, 28), (30, 20, 3)]

    async def calls() -> list[Batched]:
        return await asyncio.gather(
            *(
                batcher.classify([np.full(s, i + 1, np.uint8)], received_at=0.0, deadline=None)
                for i, s in enumerate(shapes)
            )
        )

    results = asyncio.run(calls())
    assert cascade.batches == [3]
    assert [int(r.answers.edge_class_id[0]) for r in results] == [1, 2, 3]


def test_a_cancelled_batch_cancels_its_callers() -> None:
    batcher = Batcher(FakeCascade(10.0), BatchPolicy())  # type: ignore[arg-type]

    async def cancelled() -> list[Any]:
        calls = [
            asyncio.ensure_future(batcher.classify(image(v), received_at=0.0, deadline=None))
            for v in (1, 2)
        ]
        await asyncio.sleep(0.05)
        for task in list(batcher._tasks):
            task.cancel()
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(cancelled())
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
