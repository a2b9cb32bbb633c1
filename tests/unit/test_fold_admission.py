"""A request's images get their frame shapes' folded variants before they join a batch (issue
12): the request that brings a new shape waits for its compilation, and the requests batched
with it do not (they waited for its compile: 57-151 ms, several times that on busy cores)."""

import asyncio
from pathlib import Path

import numpy as np

from edgecascade.edge.serving.agent import Deployment, EdgeAgent
from edgecascade.edge.serving.batching import BatchPolicy
from edgecascade.edge.serving.limits import InFlightLimit
from edgecascade.edge.serving.metrics import Metrics
from edgecascade.edge.serving.settings import EdgeSettings
from tests.unit.test_cascade_routing import manifest
from tests.unit.test_statistics import Model, answers


class Cascade:
    def __init__(self, model: Model) -> None:
        self.model = model
        self.batched: list[tuple[list[tuple[int, ...]], int]] = []  # shapes, readied by then

    async def classify_batch(self, images, **_):
        self.batched.append(([image.shape for image in images], len(self.model.ready)))
        return answers(manifest(), len(images))


def test_a_requests_variants_are_ready_before_its_images_join_a_batch() -> None:
    model = Model()
    cascade = Cascade(model)
    pair = manifest()
    deployment = Deployment(pair, Path(), model, cascade, None, BatchPolicy(instances=1))
    edge = EdgeAgent(
        EdgeSettings(insecure=True),
        deployment,
        InFlightLimit(4),
        Metrics(pair, lambda: 0),
        breaker=None,
        latency=None,
    )
    frames = [[np.zeros((28, 28), np.uint8)], [np.zeros((50, 60), np.uint8)] * 2]

    async def main() -> None:
        await asyncio.gather(*(edge.answer(lambda f=f: f, received_at=0.0) for f in frames))

    asyncio.run(main())
    assert sorted(model.ready) == [[(28, 28)], [(50, 60), (50, 60)]]
    shapes = [shape for batch, _ in cascade.batched for shape in batch]
    assert sorted(shapes) == [(28, 28), (50, 60), (50, 60)]
    for batch, readied in cascade.batched:  # each image joined once its shapes were ready
        assert {*batch} <= {shape for ready in model.ready[:readied] for shape in ready}
