"""A deployment replaced by an update is closed only after the requests in flight on it are done
(the fashion pair from the artifacts, compiled for real; the cloud is a closed port)."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from grpc.aio import UsageError
from numpy.typing import NDArray

from edgecascade.cloud.common.paths import artifacts_root, family_dir
from edgecascade.cloud.common.ports import free_port
from edgecascade.edge.serving.agent import EdgeAgent
from edgecascade.edge.serving.settings import EdgeSettings
from edgecascade.router.cascade.degraded import DegradedReason

pytestmark = pytest.mark.skipif(
    not (family_dir("fashion", artifacts_root()) / "manifest.json").exists(),
    reason="needs the fashion models (edgecascade models build)",
)


async def until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_a_swap_closes_the_replaced_deployment_after_its_requests_are_done() -> None:
    async def main() -> None:
        # Every input escalates, so the request in flight uses the old cloud client after the swap.
        cloud_url = f"127.0.0.1:{free_port()}"  # nothing listens there
        settings = EdgeSettings.model_validate(
            {
                "family": "fashion",
                "cloud_url": cloud_url,
                "threshold": 1,
                "insecure": True,
                "cloud_insecure": True,
                "allow_unsigned": True,
            }
        )
        agent = await EdgeAgent.load(settings)
        old = agent.deployment
        gate = threading.Event()

        def decode() -> Sequence[NDArray[np.uint8]]:
            gate.wait(60)
            return [np.zeros((28, 28), np.uint8)]

        request = asyncio.ensure_future(agent.answer(decode, received_at=time.perf_counter()))
        await until(lambda d=old: d.in_flight == 1)  # type: ignore[misc]
        swap = asyncio.ensure_future(agent.activate(old.folder))
        await until(lambda d=old: agent.deployment is not d)  # type: ignore[misc]  # compiled, warmed up, swapped in
        await asyncio.sleep(0.3)
        assert not swap.done(), "closed while a request was in flight on it"
        gate.set()
        answers = await request
        assert answers.pair == old.manifest and answers.escalations == 1
        assert answers.degraded_reason is DegradedReason.CLOUD_UNAVAILABLE  # not a closed client
        new = await asyncio.wait_for(swap, 30)
        assert agent.deployment is new and agent.previous == old.manifest
        assert old.cloud is not None
        with pytest.raises(UsageError, match="closed"):
            await old.cloud.infer_batch(np.zeros((1, 28, 28, 1), np.uint8), 1.0)
        model = weakref.ref(old.model)
        del old, request
        gc.collect()
        assert model() is None, "the replaced deployment's compiled model is still referenced"
        answers = await agent.answer(decode, received_at=time.perf_counter())  # the new one serves
        assert answers.pair == new.manifest and new.in_flight == 0
        assert new.cloud is not None
        await new.cloud.close()

    asyncio.run(main())
