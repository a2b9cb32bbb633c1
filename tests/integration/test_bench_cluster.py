"""bench cluster's ramp on a real Triton (short steps): the capacity it reports is a rate that
held its p99 target, the next one up did not, and sizing follows the formula."""

import asyncio

import pytest

from edgecascade.router.gateway.cluster_bench import START_RATE, capacities, sizing
from tests.integration.test_triton_server import images, infer_input

pytestmark = pytest.mark.integration


async def ready(client) -> object:
    return await client.is_server_ready(client_timeout=5.0)


def test_the_capacity_is_the_last_rate_that_held(triton, fashion_manifest):
    tensor = infer_input(images(fashion_manifest, 1))

    async def infer(client) -> object:
        return await client.infer(fashion_manifest.cloud.name, [tensor], client_timeout=5.0)

    found = asyncio.run(capacities({"infer": (triton.grpc_url, infer)}, 20, 0.3))
    steps = found["infer"]["steps"]
    capacity = found["infer"]["capacity_rps"]
    assert capacity >= START_RATE
    held = [s for s in steps if s["rate"] == capacity]
    assert any(s["p99_ms"] <= 20 and s["errors"] == 0 for s in held)
    higher = [s for s in steps if s["rate"] > capacity]
    assert higher and all(s["p99_ms"] > 20 or s["errors"] for s in higher)  # missed, twice
    assert len(higher) >= 2


def test_an_unreachable_target_has_no_capacity_and_no_sizing(triton):
    found = asyncio.run(capacities({"ready": (triton.grpc_url, ready)}, 0.001, 0.2))
    assert found["ready"]["capacity_rps"] == 0
    assert len(found["ready"]["steps"]) == 2  # the first rate, missed twice: no bisection
    assert sizing(0, 100, 10, 0.1) is None


def test_sizing_rounds_up_escalations_over_the_usable_capacity():
    # 1000 cameras x 10 fps x 12% = 1200 escalations/s; 70% of 500/s = 350/s per replica
    assert sizing(500, 1000, 10, 0.12) == 4
    assert sizing(10_000, 1, 1, 0.01) == 1
