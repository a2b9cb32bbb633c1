"""Helpers that several test modules use: a child edge agent, one Classify call, metrics, the
CLI's output as words."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from edgecascade.cloud.common.paths import artifacts_root
from edgecascade.cloud.common.ports import free_port
from edgecascade.edge.tools.process import AgentSecurity, EdgeProcess
from edgecascade.edge.tools.samples import Frame
from edgecascade.v1 import cascade_pb2 as pb
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc


def metric(url: str, name: str, **labels: str) -> float | None:
    """One sample of a Prometheus endpoint (`name` as exposed, e.g. `..._total`, or a Triton
    counter's own name, which the parser gives `_total`), matched on `labels` (a subset of the
    sample's labels); None when no sample matches."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            named = sample.name in (name, f"{name}_total")
            if named and labels.items() <= sample.labels.items():
                return float(sample.value)
    return None


@dataclass
class Agent:
    """An edge agent child process with its metrics endpoint."""

    process: EdgeProcess
    metrics_url: str

    @property
    def address(self) -> str:
        return self.process.address

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the agent's metrics; 0 when it has not been exposed yet."""
        return metric(self.metrics_url, name, **labels) or 0.0


def start_agent(
    log_dir: Path, cloud_url: str | None, *extra: str, security: AgentSecurity | None = None
) -> Agent:
    """`edgecascade edge serve --family fashion` with metrics on a free port, started."""
    port = free_port()
    process = EdgeProcess(
        "fashion",
        cloud_url,
        log_dir / "edge.log",
        "--metrics-port",
        str(port),
        *extra,
        security=security,
    )
    return Agent(process.start(), f"http://127.0.0.1:{port}/metrics")


def following_edge(
    cloud_url: str | None,
    sync_url: str,
    artifacts: Path,
    log_path: Path,
    *extra: str,
    trusted_keys: Path | None = None,
    security: AgentSecurity | None = None,
    cloud_insecure: bool = True,
) -> EdgeProcess:
    """An edge agent of fashion (cloud at `cloud_url`, None: edge only) that follows ModelSync
    at `sync_url` into `artifacts`, trusting manifests signed by `trusted_keys` (default: the
    development key `models publish` signs with)."""
    keys = trusted_keys if trusted_keys is not None else artifacts_root() / "keys"
    return EdgeProcess(
        "fashion",
        cloud_url,
        log_path,
        *("--sync-url", sync_url, "--artifacts", str(artifacts), "--trusted-keys", str(keys)),
        *extra,
        security=security,
        cloud_insecure=cloud_insecure,
    )


def classify(stub: pb_grpc.CascadeStub, frame: Frame, **request: object) -> pb.ClassifyResponse:
    """One Classify call of `frame`'s encoded image, with a 10 s deadline."""
    return stub.Classify(pb.ClassifyRequest(encoded_image=frame.encoded, **request), timeout=10)


def words(output: str) -> str:
    """The CLI's output as single-spaced words, without the boxes rich draws round help and
    errors (so text that wraps across lines of a box still matches)."""
    return " ".join(output.replace("\u2502", " ").split())
