"""ModelStreamInfer through an edge agent whose cloud is a router gateway in front of two Tritons:
one Triton is SIGKILLed with streams in flight, and no request is lost, failed or degraded
(issue 12, item 8: 2 of 4 raw streams through the gateway were cut with CANCELLED)."""

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest
from tritonclient.grpc import service_pb2 as kpb
from tritonclient.grpc import service_pb2_grpc as kpb_grpc

from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.cloud.triton.server import TritonServer
from edgecascade.edge.tools.process import EdgeProcess
from edgecascade.router.gateway.process import GatewayProcess
from tests.integration.test_stream_limits import kserve_request

pytestmark = pytest.mark.integration

STREAMS = 4
REQUESTS = 120  # per stream
IN_FLIGHT = 8  # unanswered requests per stream


def test_model_stream_infer_loses_nothing_when_one_of_two_tritons_dies(
    fashion_repository, frames, tmp_path
):
    a = TritonServer(fashion_repository, log_path=tmp_path / "a.log").start()
    b = TritonServer(fashion_repository, log_path=tmp_path / "b.log").start()
    gateway = GatewayProcess(
        [a.grpc_url, b.grpc_url], tmp_path / "gateway.log", probe_interval_s=0.2
    )
    edge = EdgeProcess("fashion", gateway.url, tmp_path / "edge.log", "--threshold", "1.0")
    answers: list[list[kpb.ModelStreamInferResponse]] = [[] for _ in range(STREAMS)]
    failures: list[BaseException] = []
    killed = threading.Event()
    try:
        gateway.start()
        edge.start()

        def requests(mine: list[kpb.ModelStreamInferResponse]) -> Iterator[kpb.ModelInferRequest]:
            for i in range(REQUESTS):
                while len(mine) < i - IN_FLIGHT:
                    time.sleep(0.001)
                if i == REQUESTS // 3 and not killed.is_set():
                    killed.set()
                    os.killpg(a.pid, signal.SIGKILL)  # with requests of every stream in flight
                yield kserve_request(frames[i % len(frames)], i)

        def stream(mine: list[kpb.ModelStreamInferResponse]) -> None:
            try:
                with PLAINTEXT.channel(edge.address) as channel:
                    stub = kpb_grpc.GRPCInferenceServiceStub(channel)
                    for response in stub.ModelStreamInfer(requests(mine), timeout=120):
                        mine.append(response)
            except BaseException as e:  # reported below, with the answers so far
                failures.append(e)

        threads = [threading.Thread(target=stream, args=(mine,)) for mine in answers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(180)
        assert killed.is_set() and failures == []
        for mine in answers:
            assert [r.infer_response.id for r in mine] == [str(i) for i in range(REQUESTS)]
            assert [r.error_message for r in mine if r.error_message] == []
            tiers = [r.infer_response.parameters["tier"].string_param for r in mine]
            assert set(tiers) == {"cloud"}, [
                r.infer_response.parameters["degraded_reason"].string_param for r in mine
            ]
    finally:
        edge.stop()
        gateway.stop()
        a.stop()
        b.stop()
