"""Faults on the cloud path under a 50 fps camera stream and unary calls (0.5 s gRPC deadline)
into an agent that escalates everything: agent -> TCP proxy -> gateway -> two Tritons. The proxy
adds latency, turns into a black hole, resets every connection; the gateway is frozen (SIGSTOP,
then SIGCONT); one Triton is killed (SIGKILL). Each fault: no call fails (answers come back
degraded and counted), and escalation is back within a second of the fault's end. The figures go
into the reliability report (`faults`)."""

import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.cloud.triton.server import TritonServer
from edgecascade.edge.tools.process import EdgeProcess
from edgecascade.edge.tools.samples import Frame, labelled_frames
from edgecascade.router.gateway.process import GatewayProcess
from tests.faultproxy import FaultProxy
from tests.reliability.report import Report
from tests.traffic import Traffic, recovery_s, summary

pytestmark = pytest.mark.integration

BEFORE_S, FAULT_S, AFTER_S = 1.0, 3.0, 3.0
RECOVERY_S = 1.0  # escalation back within this of the fault's end


@dataclass
class Path_:
    proxy: FaultProxy
    gateway: GatewayProcess
    tritons: list[TritonServer]
    agent: EdgeProcess
    frames: list[Frame]


@pytest.fixture(scope="module")
def cloud_path(fashion_repository: Path, tmp_path_factory) -> Iterator[Path_]:
    folder = tmp_path_factory.mktemp("faults")
    with (
        TritonServer(fashion_repository, log_path=folder / "triton-a.log") as a,
        TritonServer(fashion_repository, log_path=folder / "triton-b.log") as b,
        GatewayProcess([a.grpc_url, b.grpc_url], folder / "gateway.log", 0.2) as gateway,
    ):
        proxy = FaultProxy(gateway.url)
        try:
            with EdgeProcess(
                "fashion", proxy.address, folder / "edge.log", "--threshold", "1.0"
            ) as agent:
                yield Path_(proxy, gateway, [a, b], agent, labelled_frames("fashion", 50))
        finally:
            proxy.close()


def gateway_processes(gateway: GatewayProcess) -> list[psutil.Process]:
    assert gateway.pid is not None
    parent = psutil.Process(gateway.pid)
    return [parent, *parent.children(recursive=True)]


def signal_all(processes: list[psutil.Process], signum: int) -> None:
    for process in processes:
        process.send_signal(signum)


def faults(path: Path_) -> dict[str, tuple[Callable[[], None], Callable[[], None] | None]]:
    """Each fault: how it starts and how it ends (None: it does not)."""
    proxy, frozen = path.proxy, gateway_processes(path.gateway)

    def set_delay(seconds: float) -> Callable[[], None]:
        return lambda: setattr(proxy, "delay_s", seconds)

    def set_blackhole(on: bool) -> Callable[[], None]:
        return lambda: setattr(proxy, "blackhole", on)

    def reset() -> None:
        proxy.refusing = True
        proxy.reset()

    def kill_one() -> None:
        pid = path.tritons[1].pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)

    return {
        "latency_300ms": (set_delay(0.15), set_delay(0.0)),  # 150 ms each way
        "black_hole": (set_blackhole(True), set_blackhole(False)),
        "connection_reset": (reset, lambda: setattr(proxy, "refusing", False)),
        "gateway_sigstop": (
            lambda: signal_all(frozen, signal.SIGSTOP),
            lambda: signal_all(frozen, signal.SIGCONT),
        ),
        "triton_sigkill": (kill_one, None),  # one of two: the other answers
    }


def test_every_fault_loses_no_request_and_escalation_comes_back_within_a_second(
    cloud_path: Path_, report: Report
) -> None:
    figures = {}
    with PLAINTEXT.channel(cloud_path.agent.address) as channel:
        for name, (begin, end) in faults(cloud_path).items():
            traffic = Traffic(channel, cloud_path.frames, deadline_s=0.5).start()
            time.sleep(BEFORE_S)
            begin()
            started = time.perf_counter()
            time.sleep(FAULT_S)
            if end is not None:
                end()
            ended = time.perf_counter()
            time.sleep(AFTER_S)
            outcomes = traffic.stop()
            during = [o for o in outcomes if started <= o.at < ended]
            figures[name] = {
                **summary(outcomes),
                "during_fault": summary(during),
                "escalation_back_s": recovery_s(outcomes, ended if end else started + 1.0),
            }
    report.figures["faults"] = figures
    for name, figure in figures.items():
        assert figure["failed"] == 0, (name, figure)
        back = figure["escalation_back_s"]
        assert back is not None and back <= RECOVERY_S, (name, figure)
