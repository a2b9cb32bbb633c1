"""A bug met while answering one frame is that frame's INTERNAL error, never the stream's end
(issue 12): EdgeAgent.answer turns it into a RequestError, ModelStreamInfer answers it."""

import asyncio
from pathlib import Path

import grpc
import pytest

from edgecascade.cloud.common.errors import InternalFailure
from edgecascade.edge.serving.agent import Deployment, EdgeAgent
from edgecascade.edge.serving.kserve import KServeService
from edgecascade.edge.serving.limits import InFlightLimit
from edgecascade.edge.serving.metrics import Metrics
from edgecascade.edge.serving.settings import EdgeSettings
from tests.unit.test_cascade_routing import manifest
from tests.unit.test_kserve_requests import PNG, request
from tests.unit.test_statistics import Model


class Cascade:
    async def classify_batch(self, images, **_):
        raise ZeroDivisionError("a bug")


def agent() -> EdgeAgent:
    metrics = Metrics(manifest(), lambda: 0)
    return EdgeAgent(
        EdgeSettings(insecure=True),
        Deployment(manifest(), Path(), Model(), Cascade(), None),
        InFlightLimit(4),
        metrics,
        breaker=None,
        latency=None,
    )


def test_a_bug_is_an_internal_failure_of_that_request():
    edge = agent()
    with pytest.raises(InternalFailure, match="ZeroDivisionError") as failure:
        asyncio.run(edge.answer(lambda: [], received_at=0.0))
    assert failure.value.code == grpc.StatusCode.INTERNAL and edge.limit.current == 0
    stats = edge.metrics.statistics.versions["1"]
    assert stats.failures["BACKEND"] == 1 and stats.fail.count == 1 and stats.pending == 0


def test_a_bug_in_one_model_stream_infer_request_is_its_error_message():
    service = KServeService(agent())
    service.model = "fashion"
    service._check_model = lambda name, version: None
    message = request("image", "BYTES", [1], bytes_contents=[PNG])
    message.id = "7"
    response = asyncio.run(service._stream_item(message, {}))  # no trace context
    assert response.error_message.startswith("INTERNAL: ") and response.infer_response.id == "7"
