"""What the agent's gRPC services share: in-order streams with a window, request budgets."""

import asyncio
import math

import pytest

from edgecascade.cloud.common.errors import InvalidInput
from edgecascade.edge.serving.rpc import ordered, request_deadline


def test_a_stream_has_at_most_its_window_of_requests_read_and_unanswered():
    """Issue 12 item 5: a stream had window + 1 requests in flight."""
    in_flight, most, read = 0, 0, 0

    async def requests():
        nonlocal read
        for i in range(40):
            read += 1
            yield i

    async def handle(i: int) -> int:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight, read - i)  # read ahead of the one being handled
        await asyncio.sleep(0.001 * (i % 3))
        in_flight -= 1
        return i

    async def main() -> list[int]:
        return [r async for r in ordered(requests(), handle, window=4)]

    assert asyncio.run(main()) == list(range(40))
    assert most == 4


@pytest.mark.parametrize("budget", [math.nan, math.inf, -math.inf, -1.0, -1e-9])
def test_a_budget_that_is_not_a_finite_number_of_ms_is_refused(budget):
    """Issue 12 item 7: NaN, infinities and negative budgets were taken as no budget."""
    with pytest.raises(InvalidInput, match="deadline_ms must be a finite number"):
        request_deadline(None, 0.0, budget)


def test_the_earlier_of_the_grpc_deadline_and_the_budget_wins():
    assert request_deadline(None, 10.0, 0.0) is None
    assert request_deadline(12.0, 10.0, 0.0) == 12.0
    assert request_deadline(12.0, 10.0, 500.0) == 10.5
    assert request_deadline(10.2, 10.0, 500.0) == 10.2
    assert request_deadline(None, 10.0, 250.0) == 10.25
