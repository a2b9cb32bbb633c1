"""Run an edge agent as a child process (for the demo, benchmarks, `edge run` and tests), and
development certificates and a token for one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgecascade.cloud.common import certs
from edgecascade.cloud.common.auth import Callers, Scope
from edgecascade.cloud.common.certs import write_atomically
from edgecascade.cloud.common.launcher import ChildProcess, edgecascade_command
from edgecascade.cloud.common.ports import free_port
from edgecascade.cloud.common.transport import PLAINTEXT, Tls, Transport
from edgecascade.edge.serving.security import client_transport
from edgecascade.v1 import cascade_pb2 as pb
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc

AGENT_CERT = "edge-agent"
CLIENT_CERT = "edge-client"
TRITON_CERT = "triton"
AGENT_CLIENT_CERT = "edge-agent-client"  # the agent calling Triton
CALLERS = "callers.json"
TOKEN = "token"


@dataclass(frozen=True)
class AgentSecurity:
    """Files for an agent with mutual TLS and a caller file, and for its client: the CA, the
    agent's server certificate, a client certificate and a bearer token, in `folder`."""

    folder: Path

    def agent_args(self) -> list[str]:
        """The `edge serve` options that use them."""
        f = self.folder
        return [
            "--tls-cert", str(f / f"{AGENT_CERT}.pem"), "--tls-key", str(f / f"{AGENT_CERT}.key"),
            "--tls-ca", str(f / certs.CA_CERT), "--require-client-cert",
            "--callers", str(f / CALLERS),
        ]  # fmt: skip

    def triton_tls(self) -> Tls:
        """Triton's side of the agent's cloud hop: its certificate, client certificates from
        the same CA required (mutual TLS)."""
        f = self.folder
        return Tls(
            ca=f / certs.CA_CERT,
            cert=f / f"{TRITON_CERT}.pem",
            key=f / f"{TRITON_CERT}.key",
            require_client_cert=True,
        )

    def cloud_tls(self) -> Tls:
        """A caller's side of the cloud hop (the agent, Triton's own checks, the demo's
        cloud-only baseline): Triton verified against the CA, the agent's client certificate."""
        f = self.folder
        return Tls(
            ca=f / certs.CA_CERT,
            cert=f / f"{AGENT_CLIENT_CERT}.pem",
            key=f / f"{AGENT_CLIENT_CERT}.key",
        )

    def cloud_args(self) -> list[str]:
        """The `edge serve` options for calling a Triton that serves `triton_tls()`."""
        tls = self.cloud_tls()
        return [
            "--cloud-ca",
            str(tls.ca),
            "--cloud-cert",
            str(tls.cert),
            "--cloud-key",
            str(tls.key),
        ]

    def client(self) -> Transport:
        """A client's transport: the client certificate and the token."""
        f = self.folder
        return client_transport(
            ca=f / certs.CA_CERT,
            cert=f / f"{CLIENT_CERT}.pem",
            key=f / f"{CLIENT_CERT}.key",
            token_file=f / TOKEN,
        )


def development_security(
    folder: Path, scopes: tuple[Scope, ...] = ("infer", "status")
) -> AgentSecurity:
    """A new CA in `folder` (made if missing) with server certificates for an agent and a
    Triton on this machine, client certificates for a caller of the agent and for the agent
    calling Triton, and a caller file holding one token with `scopes` (the
    token in `folder/token`, 0600)."""
    certs.init(folder)
    certs.issue(folder, AGENT_CERT)
    certs.issue(folder, CLIENT_CERT, kind="client")
    certs.issue(folder, TRITON_CERT)
    certs.issue(folder, AGENT_CLIENT_CERT, kind="client")
    callers, token = Callers().with_new_token(CLIENT_CERT, scopes)
    callers.save(folder / CALLERS)
    write_atomically(folder / TOKEN, token.encode() + b"\n", mode=0o600)
    return AgentSecurity(folder)


class EdgeProcess(ChildProcess):
    """`edgecascade edge serve` on a free loopback port, ready once GetStatus answers.

    With `security` the agent serves mutual TLS and checks callers, and `client` uses its
    client certificate and token; without, it serves plaintext (--insecure). Its calls to the
    cloud and ModelSync are plaintext unless `cloud_insecure` is False (then `extra` names
    their TLS options)."""

    name = "edge agent"

    def __init__(
        self,
        family: str,
        cloud_url: str | None,
        log_path: Path,
        *extra: str,
        security: AgentSecurity | None = None,
        cloud_insecure: bool = True,
    ) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.client = security.client() if security else PLAINTEXT
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
                *(security.agent_args() if security else ["--insecure"]),
                *(["--cloud-insecure"] if cloud_insecure else []),
                *extra,
            ),
            log_path,
        )

    def ready(self) -> bool:
        with self.client.channel(self.address) as channel:
            pb_grpc.CascadeStub(channel).GetStatus(pb.GetStatusRequest(), timeout=1.0)
        return True
