"""Run the router gateway as a child process (for benchmarks and tests)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import tritonclient.grpc as grpcclient

from cloud.ports import free_port


class GatewayProcess:
    """`edgecascade router serve` on a free loopback port; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, upstreams: Sequence[str], log_path: Path, probe_interval_s: float = 0.5):
        self.port = free_port()
        self.url = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        self._args = [sys.executable, "-m", "router.commands", "serve", "--port", str(self.port),
                      "--probe-interval", str(probe_interval_s),
                      *(arg for url in upstreams for arg in ("--upstream", url))]
        self._process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 30.0) -> "GatewayProcess":
        """Launch and wait until it is live (its endpoints may or may not be ready)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(self._args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        with grpcclient.InferenceServerClient(self.url) as client:
            while True:
                if self._process.poll() is not None:
                    raise RuntimeError(f"gateway exited ({self._process.returncode}):\n{self.log_tail()}")
                try:
                    if client.is_server_live(client_timeout=1.0):
                        return self
                except grpcclient.InferenceServerException:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"gateway not live in {timeout_s:.0f}s:\n{self.log_tail()}")
                time.sleep(0.1)

    def stop(self, grace_s: float = 10.0) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(grace_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> "GatewayProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
