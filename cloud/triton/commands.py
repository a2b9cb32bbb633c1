"""`edgecascade cloud ...`: write the Triton model repository, serve it with a local Triton."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from edgecascade.cloud.common import tracing
from edgecascade.cloud.common.errors import UserError
from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.paths import artifacts_root, manifest_path, triton_repository
from edgecascade.cloud.common.transport import Tls
from edgecascade.cloud.triton.repository import write_repository
from edgecascade.cloud.triton.server import ADMIN_KEY_HEADER, TritonServer, read_admin_key

app = typer.Typer(help="The cloud tier: Triton model repository and server.", no_args_is_help=True)
console = Console()

FamilyOption = Annotated[
    list[str] | None,
    typer.Option("--family", help="family to include (repeatable); default: every built family"),
]


def load_manifests(families: list[str] | None) -> list[Manifest]:
    """Manifests of `families`, or of every family with a manifest under the artifacts root."""
    names = families or sorted(p.parent.name for p in artifacts_root().glob("*/manifest.json"))
    if not names:
        raise typer.BadParameter(f"no built family under {artifacts_root()}")
    missing = [n for n in names if not manifest_path(n).exists()]
    if missing:
        raise typer.BadParameter(
            f"not built: {', '.join(missing)} (no manifest under {artifacts_root()})"
        )
    return [Manifest.load(manifest_path(n)) for n in names]


@app.command("repository")
def repository_command(
    family: FamilyOption = None,
    gpu: Annotated[bool, typer.Option(help="production variant: onnxruntime on KIND_GPU")] = False,
    out: Annotated[Path | None, typer.Option(help="repository folder")] = None,
) -> None:
    """Write the Triton model repository for the families' cloud models."""
    repository = out or triton_repository().with_name("triton-gpu" if gpu else "triton")
    for model_dir in write_repository(load_manifests(family), repository, gpu=gpu):
        console.print(f"wrote [bold]{model_dir}[/]")


@app.command("serve")
def serve_command(
    family: FamilyOption = None,
    grpc_port: Annotated[int | None, typer.Option(help="default: a free port")] = None,
    http_port: Annotated[int | None, typer.Option(help="default: a free port")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="default: a free port")] = None,
    repository: Annotated[
        Path | None, typer.Option(help="model repository to write and serve")
    ] = None,
    log_file: Annotated[
        Path | None, typer.Option(help="Triton log (default: in a temp dir)")
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="seconds to wait for the models to be ready")
    ] = 300.0,
    tls_cert: Annotated[Path | None, typer.Option(help="serve gRPC over TLS: certificate")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="its private key")] = None,
    tls_ca: Annotated[
        Path | None,
        typer.Option(help="CA of client certificates (and of Triton's own, for its own calls)"),
    ] = None,
    require_client_cert: Annotated[
        bool, typer.Option(help="mutual TLS: refuse clients without a certificate from --tls-ca")
    ] = False,
    client_cert: Annotated[
        Path | None, typer.Option(help="with mutual TLS: the certificate of Triton's own calls")
    ] = None,
    client_key: Annotated[Path | None, typer.Option(help="its private key")] = None,
    admin_key_file: Annotated[
        Path | None,
        typer.Option(
            help="file holding the key (letters, digits) that model control, shared memory, "
            f"trace and logging calls must send as the `{ADMIN_KEY_HEADER}` header"
        ),
    ] = None,
    otlp_endpoint: Annotated[
        str | None,
        typer.Option(
            envvar=tracing.ENDPOINT_VARIABLE,
            help="Triton exports traces over OTLP/HTTP to this collector (http://host:4318): "
            "every request that carries a W3C trace context, in the caller's trace",
        ),
    ] = None,
    trace_rate: Annotated[
        int,
        typer.Option(
            min=0, help="with --otlp-endpoint, also trace 1 in N requests without a trace context"
        ),
    ] = 0,
) -> None:
    """Serve the families' cloud models with the local Triton until Ctrl-C or SIGTERM."""
    repository = repository or triton_repository()
    try:
        tls = Tls(tls_ca, tls_cert, tls_key, require_client_cert) if tls_cert or tls_key else None
        own = Tls(tls_ca, client_cert, client_key) if tls else None
        admin_key = read_admin_key(admin_key_file) if admin_key_file else None
        if tls is None and (tls_ca or require_client_cert or client_cert or client_key):
            raise ValueError("TLS options need --tls-cert and --tls-key")
        if require_client_cert and client_cert is None:
            raise ValueError("--require-client-cert needs --client-cert/--client-key")
        if otlp_endpoint is not None:
            tracing.check_endpoint(otlp_endpoint)
    except (ValueError, UserError) as e:
        raise typer.BadParameter(str(e)) from None
    write_repository(load_manifests(family), repository)
    try:
        server = TritonServer(
            repository,
            grpc_port=grpc_port,
            http_port=http_port,
            metrics_port=metrics_port,
            log_path=log_file,
            tls=tls,
            client_tls=own,
            admin_key=admin_key,
            otlp_endpoint=otlp_endpoint,
            trace_rate=trace_rate,
        )
    except ValueError as e:  # a TlsError too
        raise typer.BadParameter(str(e)) from None
    with console.status("starting Triton"):
        server.start(timeout)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        console.print(f"Triton ready (pid {server.pid}), repository {repository}")
        console.print(f"  gRPC     [bold]{server.grpc_url}[/]")
        console.print(f"  HTTP     http://{server.http_url}")
        console.print(f"  metrics  {server.metrics_url}")
        console.print(f"  log      {server.log_path}")
        if otlp_endpoint:
            console.print(f"  traces   {tracing.traces_url(otlp_endpoint)}")
        while not stop.wait(0.5):
            if not server.is_running():
                console.print(f"[red]Triton exited[/]:\n{server.log_tail()}")
                raise typer.Exit(1)
        console.print("stopping Triton")
    finally:
        server.stop()
