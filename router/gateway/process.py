"""Run the router gateway as a child process (for benchmarks and tests)."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path

from edgecascade.cloud.common.launcher import ChildProcess, edgecascade_command
from edgecascade.cloud.common.ports import free_port
from edgecascade.cloud.common.transport import PLAINTEXT, Transport


class GatewayProcess(ChildProcess):
    """`edgecascade router serve` on a free loopback port, ready once it is live (its
    endpoints may or may not be ready); with `registry` it also serves ModelSync, with
    `http_port` KServe v2 over HTTP/REST (then ready once that port listens too). `options`
    are more `router serve` options (TLS, callers); `client` is how its readiness is asked
    (the TLS and a `status` token the gateway then needs)."""

    name = "gateway"

    def __init__(
        self,
        upstreams: Sequence[str],
        log_path: Path,
        probe_interval_s: float = 0.5,
        registry: Path | None = None,
        metrics_port: int | None = None,
        http_port: int | None = None,
        options: Sequence[str] = (),
        client: Transport = PLAINTEXT,
    ) -> None:
        self.port = free_port()
        self.client = client
        self.url = f"127.0.0.1:{self.port}"
        self.http_port = http_port
        self.metrics_port = metrics_port
        super().__init__(
            edgecascade_command(
                "router",
                "serve",
                "--port",
                str(self.port),
                "--probe-interval",
                str(probe_interval_s),
                *(arg for url in upstreams for arg in ("--upstream", url)),
                *(["--registry", str(registry)] if registry else []),
                *(["--metrics-port", str(metrics_port)] if metrics_port else []),
                *(["--http-port", str(http_port)] if http_port else []),
                *options,
            ),
            log_path,
        )

    def ready(self) -> bool:
        with self.client.triton(self.url) as client:
            if not client.is_server_live(headers=self.client.headers, client_timeout=1.0):
                return False
        if self.http_port:
            socket.create_connection(("127.0.0.1", self.http_port), timeout=1.0).close()
        return True
