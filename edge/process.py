"""Run an edge agent as a child process (for the demo, benchmarks and tests)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import grpc

from cloud.ports import free_port
from edgecascade.v1 import cascade_pb2 as pb
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc


class EdgeProcess:
    """`edgecascade edge serve` on a free loopback port; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, family: str, cloud_url: str | None, log_path: Path, *extra: str):
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        self._args = [sys.executable, "-m", "edge.cli", "edge", "serve", "--family", family,
                      "--port", str(self.port), *(["--cloud-url", cloud_url] if cloud_url else []),
                      *extra]
        self._process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60.0) -> "EdgeProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(self._args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        with grpc.insecure_channel(self.address) as channel:
            stub = pb_grpc.CascadeStub(channel)
            while True:
                if self._process.poll() is not None:
                    raise RuntimeError(f"edge agent exited ({self._process.returncode}):\n{self.log_tail()}")
                try:
                    stub.GetStatus(pb.GetStatusRequest(), timeout=1.0)
                    return self
                except grpc.RpcError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise TimeoutError(f"edge agent not ready in {timeout_s:.0f}s:\n{self.log_tail()}")
                    time.sleep(0.2)

    def stop(self, grace_s: float = 10.0) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(grace_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    @property
    def returncode(self) -> int | None:
        """The exit status once the agent has exited, else None."""
        return None if self._process is None else self._process.poll()

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> "EdgeProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
