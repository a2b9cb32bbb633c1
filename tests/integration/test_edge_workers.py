"""`edge serve --workers N`: N agent processes answer on one gRPC port and one REST port, each
counting its own calls on its own metrics port; a port another program holds is still an
error; SIGTERM to the parent stops every worker, and the port can be taken again at once."""

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from edgecascade.cloud.common.launcher import edgecascade_command
from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.ports import free_port, port_is_free
from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.edge.tools.bench import bench_images, bench_requests
from edgecascade.v1 import cascade_pb2 as pb
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc
from tests.helpers import metric

pytestmark = pytest.mark.integration
CALLS = 40


def _two_free_ports() -> int:
    """A port p with p + 1 free too (worker 1's metrics port)."""
    while not port_is_free((port := free_port()) + 1):
        pass
    return port


def _serve(port: int, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    command = edgecascade_command("edge", "serve", "--insecure", "--family", "fashion",
                                  "--port", str(port), "--workers", "2", *extra)  # fmt: skip
    with open(log, "ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip


def _listeners(parent: subprocess.Popen[bytes], port: int) -> list[psutil.Process]:
    """The parent's child processes listening on `port`."""
    found = []
    for child in psutil.Process(parent.pid).children():
        with_port = [c for c in child.net_connections("tcp") if c.status == "LISTEN"]
        if any(c.laddr.port == port for c in with_port):
            found.append(child)
    return found


def _wait_serving(parent: subprocess.Popen[bytes], port: int, log: Path) -> list[psutil.Process]:
    deadline = time.monotonic() + 120
    while len(workers := _listeners(parent, port)) < 2:
        assert parent.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    return workers


@pytest.fixture
def agent(
    fashion_manifest: Manifest, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    port, metrics, http = free_port(), _two_free_ports(), free_port()
    extra = ("--metrics-port", str(metrics), "--http-port", str(http))
    parent = _serve(port, tmp_path / "edge.log", *extra)
    try:
        yield parent, port, metrics, http
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
            parent.wait()


def test_two_workers_answer_on_one_port_and_stop_together(agent, fashion_manifest, tmp_path):
    parent, port, metrics, http = agent
    workers = _wait_serving(parent, port, tmp_path / "edge.log")
    assert len(_listeners(parent, http)) == 2  # the REST port is shared too
    ready = urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=5)
    assert ready.status == 200
    requests = bench_requests(bench_images(fashion_manifest, 4))
    for i in range(CALLS):  # a new connection each: the kernel spreads them among the workers
        with PLAINTEXT.channel(f"127.0.0.1:{port}") as channel:
            answer = pb_grpc.CascadeStub(channel).Classify(requests[i % 4], timeout=10)
            assert answer.tier == pb.EDGE and answer.top_k
    counts = [
        metric(f"http://127.0.0.1:{metrics + i}/metrics", "nv_inference_count") or 0.0
        for i in range(2)
    ]
    assert sum(counts) == CALLS and all(counts), counts  # each worker answered some

    parent.send_signal(signal.SIGTERM)  # the parent only, not its process group
    assert parent.wait(timeout=30) == 0
    gone, alive = psutil.wait_procs(workers, timeout=5)
    assert not alive, f"workers left running: {alive}"
    assert port_is_free(port)
    again = _serve(port, tmp_path / "again.log")  # the port is taken again at once
    try:
        _wait_serving(again, port, tmp_path / "again.log")
    finally:
        again.send_signal(signal.SIGINT)
        assert again.wait(timeout=30) == 0


def test_a_worker_that_dies_stops_the_others(agent, tmp_path):
    parent, port, _, _ = agent
    workers = _wait_serving(parent, port, tmp_path / "edge.log")
    workers[0].kill()
    assert parent.wait(timeout=30) != 0
    gone, alive = psutil.wait_procs(workers, timeout=5)
    assert not alive
    assert "stopping the others" in (tmp_path / "edge.log").read_text()


@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain", "reuseport"])
def test_workers_on_a_port_another_program_holds(fashion_manifest, reuse_port):
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, int(reuse_port))
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        command = edgecascade_command("edge", "serve", "--insecure", "--family", "fashion",
                                      "--port", str(port), "--workers", "2")  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and f"127.0.0.1:{port}" in last and "in use" in last
    assert "Traceback" not in result.stderr


def test_workers_die_with_a_killed_parent(agent, tmp_path):
    parent, port, _, _ = agent
    workers = _wait_serving(parent, port, tmp_path / "edge.log")
    parent.kill()  # SIGKILL: the parent stops nothing itself
    parent.wait(timeout=10)
    gone, alive = psutil.wait_procs(workers, timeout=20)
    assert not alive, f"workers outlived their parent: {alive}"
