"""The gateway (its real HAProxy) sends no request to an endpoint that is up but not ready while
another is ready, and takes it back when it is: two small KServe servers stand in for Triton,
which cannot be made live-but-not-ready on demand."""

import time

import grpc
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from edgecascade.cloud.common.launcher import wait_until
from edgecascade.cloud.common.ports import free_port
from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.router.gateway.process import GatewayProcess
from tests.helpers import metric

pytestmark = pytest.mark.integration


class FakeTriton:
    """ServerLive, ServerReady (switchable) and a ModelInfer that names the server."""

    def __init__(self, name: str):
        self.name, self.ready, self.served = name, True, 0
        handlers = {
            "ServerLive": self._unary(lambda: service_pb2.ServerLiveResponse(live=True)),
            "ServerReady": self._unary(lambda: service_pb2.ServerReadyResponse(ready=self.ready)),
            "ModelInfer": self._unary(self._infer),
        }
        self.server = PLAINTEXT.sync_server(4)
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("inference.GRPCInferenceService", handlers),)
        )
        self.url = f"127.0.0.1:{PLAINTEXT.listen(self.server, '127.0.0.1:0')}"
        self.server.start()

    @staticmethod
    def _unary(reply):
        return grpc.unary_unary_rpc_method_handler(
            lambda request, context: reply(), response_serializer=lambda m: m.SerializeToString()
        )

    def _infer(self) -> service_pb2.ModelInferResponse:
        self.served += 1
        return service_pb2.ModelInferResponse(model_name=self.name)


def served_by(stub, n: int) -> set[str]:
    return {
        stub.ModelInfer(service_pb2.ModelInferRequest(model_name="m"), timeout=5).model_name
        for _ in range(n)
    }


def haproxy_metric(port: int, name: str, **labels: str) -> float:
    """One sample of the gateway's Prometheus metrics, which must be there."""
    value = metric(f"http://127.0.0.1:{port}/metrics", name, **labels)
    assert value is not None, f"no {name}{labels} in the metrics"
    return value


def test_an_endpoint_that_is_not_ready_gets_no_requests_until_it_is(tmp_path):
    a, b = FakeTriton("a"), FakeTriton("b")
    metrics = free_port()
    try:
        with (
            GatewayProcess(
                [a.url, b.url], tmp_path / "gateway.log", probe_interval_s=0.1, metrics_port=metrics
            ) as gw,
            PLAINTEXT.channel(gw.url) as channel,
        ):
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            assert served_by(stub, 20) == {"a", "b"}
            b.ready = False
            time.sleep(0.5)  # a few agent checks
            answered = {"proxy": "triton", "server": "triton0", "code": "2xx"}
            before = haproxy_metric(metrics, "haproxy_server_http_responses_total", **answered)
            assert served_by(stub, 40) == {"a"}
            # Prometheus sees the same: b is down, a up and answered those 40.
            up = {"proxy": "triton", "state": "UP"}
            assert haproxy_metric(metrics, "haproxy_server_status", server="triton1", **up) == 0
            assert haproxy_metric(metrics, "haproxy_server_status", server="triton0", **up) == 1
            after = haproxy_metric(metrics, "haproxy_server_http_responses_total", **answered)
            assert after - before == 40
            a.ready = False  # none ready (both loading models, say): both live ones serve
            assert wait_until(lambda: served_by(stub, 20) == {"a", "b"}, timeout_s=5)
            a.ready = True
            assert wait_until(lambda: served_by(stub, 20) == {"a"}, timeout_s=5)
            b.ready = True
            assert wait_until(lambda: served_by(stub, 20) == {"a", "b"}, timeout_s=5)
        assert "NOT ready" in gw.log_path.read_text()  # the agent logs the change
    finally:
        a.server.stop(None)
        b.server.stop(None)
