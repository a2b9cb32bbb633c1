"""Run an edge agent as a child process (for the demo, benchmarks and tests)."""

from __future__ import annotations

from pathlib import Path

from edgecascade.cloud.common.launcher import ChildProcess, edgecascade_command
from edgecascade.cloud.common.ports import free_port
from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.v1 import cascade_pb2 as pb
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc


class EdgeProcess(ChildProcess):
    """`edgecascade edge serve` on a free loopback port, ready once GetStatus answers."""

    name = "edge agent"

    def __init__(self, family: str, cloud_url: str | None, log_path: Path, *extra: str) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        cloud = ["--cloud-url", cloud_url] if cloud_url else []
        super().__init__(
            edgecascade_command(
                "edge",
                "serve",
                "--family",
                family,
                "--port",
                str(self.port),
                *cloud,
                *extra,
            ),
            log_path,
        )

    def ready(self) -> bool:
        with PLAINTEXT.channel(self.address) as channel:
            pb_grpc.CascadeStub(channel).GetStatus(pb.GetStatusRequest(), timeout=1.0)
        return True
