"""`edgecascade edge ...`: run an edge agent."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from edgecascade.cloud.common import logs, tracing
from edgecascade.cloud.common.serving import check_address, log_to_stderr, run_until_signalled
from edgecascade.cloud.common.settings import command_options, option_help
from edgecascade.edge.serving.server import serve
from edgecascade.edge.serving.settings import EdgeSettings, load_settings
from edgecascade.edge.sources.base import describe_kinds, source_kinds

app = typer.Typer(help="The edge agent: OpenVINO next to the camera.", no_args_is_help=True)


# How a client (`edge run`, `status`) calls an agent: TLS unless --insecure.
CaOption = Annotated[
    Path | None,
    typer.Option("--ca", help="CA (PEM) of the agent's certificate; none: the system's roots"),
]
CertOption = Annotated[
    Path | None, typer.Option("--cert", help="client certificate (PEM), for mutual TLS")
]
KeyOption = Annotated[Path | None, typer.Option("--key", help="the private key of --cert (PEM)")]
TokenFileOption = Annotated[
    Path | None,
    typer.Option("--token-file", help="file holding the bearer token (edgecascade auth add-token)"),
]
InsecureOption = Annotated[bool, typer.Option("--insecure", help="call in plaintext, without TLS")]


def _setting(name: str, *flags: str) -> Any:
    """The option that sets EdgeSettings field `name` (help and default from the field)."""
    return typer.Option(*flags, help=option_help(EdgeSettings, name))


@app.command("serve")
def serve_command(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option(help="TOML file of settings (EdgeSettings fields)")
    ] = None,
    family: Annotated[str | None, _setting("family")] = None,
    cloud_url: Annotated[str | None, _setting("cloud_url")] = None,
    sync_url: Annotated[str | None, _setting("sync_url")] = None,
    device: Annotated[str | None, _setting("device")] = None,
    hint: Annotated[str | None, _setting("hint")] = None,
    event_loop: Annotated[str | None, _setting("event_loop")] = None,
    plugin_config: Annotated[str | None, _setting("plugin_config")] = None,
    nireq: Annotated[int | None, _setting("nireq")] = None,
    workers: Annotated[int | None, _setting("workers")] = None,
    precision: Annotated[str | None, _setting("precision")] = None,
    host: Annotated[str | None, _setting("host")] = None,
    port: Annotated[int | None, _setting("port")] = None,
    threshold: Annotated[float | None, _setting("threshold")] = None,
    cloud_timeout_s: Annotated[float | None, _setting("cloud_timeout_s", "--cloud-timeout")] = None,
    breaker_failures: Annotated[int | None, _setting("breaker_failures")] = None,
    breaker_cooldown_s: Annotated[
        float | None, _setting("breaker_cooldown_s", "--breaker-cooldown")
    ] = None,
    escalations_per_second: Annotated[float | None, _setting("escalations_per_second")] = None,
    escalation_burst: Annotated[float | None, _setting("escalation_burst")] = None,
    escalations_per_day: Annotated[int | None, _setting("escalations_per_day")] = None,
    audit_rate: Annotated[float | None, _setting("audit_rate")] = None,
    audit_min_agreement: Annotated[float | None, _setting("audit_min_agreement")] = None,
    collect: Annotated[bool | None, _setting("collect", "--collect/--no-collect")] = None,
    examples_file: Annotated[Path | None, _setting("examples_file")] = None,
    examples_max_bytes: Annotated[int | None, _setting("examples_max_bytes")] = None,
    upload_interval_s: Annotated[
        float | None, _setting("upload_interval_s", "--upload-interval")
    ] = None,
    edge_id: Annotated[str | None, _setting("edge_id")] = None,
    artifacts: Annotated[Path | None, _setting("artifacts")] = None,
    max_in_flight: Annotated[int | None, _setting("max_in_flight")] = None,
    max_batch: Annotated[int | None, _setting("max_batch")] = None,
    dynamic_batching: Annotated[
        bool | None, _setting("dynamic_batching", "--dynamic-batching/--no-dynamic-batching")
    ] = None,
    max_queue_delay_us: Annotated[int | None, _setting("max_queue_delay_us")] = None,
    preferred_batch_sizes: Annotated[list[int] | None, _setting("preferred_batch_sizes")] = None,
    batch_instances: Annotated[int | None, _setting("batch_instances")] = None,
    max_message_bytes: Annotated[int | None, _setting("max_message_bytes")] = None,
    grace_s: Annotated[float | None, _setting("grace_s", "--grace")] = None,
    http_port: Annotated[int | None, _setting("http_port")] = None,
    metrics_port: Annotated[int | None, _setting("metrics_port")] = None,
    fold_preprocessing: Annotated[
        bool | None,
        _setting("fold_preprocessing", "--fold-preprocessing/--no-fold-preprocessing"),
    ] = None,
    insecure: Annotated[bool | None, _setting("insecure", "--insecure")] = None,
    tls_cert: Annotated[Path | None, _setting("tls_cert")] = None,
    tls_key: Annotated[Path | None, _setting("tls_key")] = None,
    tls_ca: Annotated[Path | None, _setting("tls_ca")] = None,
    require_client_cert: Annotated[
        bool | None, _setting("require_client_cert", "--require-client-cert")
    ] = None,
    callers: Annotated[Path | None, _setting("callers")] = None,
    cloud_insecure: Annotated[bool | None, _setting("cloud_insecure", "--cloud-insecure")] = None,
    cloud_ca: Annotated[Path | None, _setting("cloud_ca")] = None,
    cloud_cert: Annotated[Path | None, _setting("cloud_cert")] = None,
    cloud_key: Annotated[Path | None, _setting("cloud_key")] = None,
    cloud_token_file: Annotated[Path | None, _setting("cloud_token_file")] = None,
    trusted_keys: Annotated[list[Path] | None, _setting("trusted_keys")] = None,
    allow_unsigned: Annotated[bool | None, _setting("allow_unsigned", "--allow-unsigned")] = None,
    log_format: Annotated[str | None, _setting("log_format")] = None,
    log_level: Annotated[str | None, _setting("log_level")] = None,
    otlp_endpoint: Annotated[str | None, _setting("otlp_endpoint")] = None,
    trace_ratio: Annotated[float | None, _setting("trace_ratio")] = None,
) -> None:
    """Serve the Cascade and KServe v2 gRPC APIs until SIGINT/SIGTERM. Settings come from
    --config (TOML), then EDGECASCADE_<SETTING> environment variables, then these options."""
    from edgecascade.edge.tools.families import built_family

    options, flags = command_options(ctx)  # the parameters above, by settings field
    options.pop("config", None)
    settings = load_settings(config, options, flags)  # a ConfigError is a UserError
    if not settings.sync_url:  # else a family not built here is fetched from ModelSync
        built_family(settings.family, settings.artifacts)
    logs.configure(settings.log_format, settings.log_level)
    tracing.configure("edgecascade-edge", settings.otlp_endpoint, settings.trace_ratio)
    if settings.workers > 1:
        from edgecascade.edge.serving.workers import run_workers

        run_workers(settings)
        return
    run_until_signalled(lambda stop: serve(settings, stop), settings.event_loop)


@app.command("run")
def run_command(
    source: Annotated[str, typer.Option(help=f"what to read; by kind: {describe_kinds()}")],
    kind: Annotated[
        str | None,
        typer.Option(
            help=f"read --source as this kind ({', '.join(k.name for k in source_kinds())}); "
            "default: the first kind above that claims it"
        ),
    ] = None,
    agent: Annotated[
        str | None, typer.Option(help="edge agent host:port; none: start one for --family")
    ] = None,
    family: Annotated[
        str, typer.Option(help="family of the agent started when --agent is not given")
    ] = "fashion",
    cloud_url: Annotated[
        str | None, typer.Option(help="cloud for the started agent; none: edge only")
    ] = None,
    output: Annotated[Path | None, typer.Option(help="JSON lines file; default: stdout")] = None,
    sink: Annotated[
        str | None, typer.Option(help="host:port of an edgecascade.v1.ResultSink")
    ] = None,
    max_fps: Annotated[
        float | None, typer.Option(help="read at most this many frames per second")
    ] = None,
    buffer: Annotated[
        int, typer.Option(min=1, help="frames buffered; a live source drops the oldest")
    ] = 2,
    window: Annotated[int, typer.Option(min=1, help="frames awaiting an answer at once")] = 2,
    top_k: Annotated[int, typer.Option(min=1, help="classes per answer")] = 5,
    reconnect_timeout: Annotated[
        float, typer.Option(help="seconds to keep reconnecting; 0: forever")
    ] = 30.0,
    ca: CaOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    token_file: TokenFileOption = None,
    insecure: InsecureOption = False,
) -> None:
    """Classify every frame of a source through an edge agent; one JSON line per frame.
    --ca/--cert/--key/--token-file say how --agent and --sink are called. Without --agent, an
    agent started for --family serves mutual TLS with certificates and a token made for this
    run (--insecure: plaintext)."""
    import sys
    import tempfile
    import threading
    from contextlib import ExitStack

    from rich.console import Console

    from edgecascade.edge.serving.security import client_transport
    from edgecascade.edge.tools.families import built_family
    from edgecascade.edge.tools.process import EdgeProcess, development_security
    from edgecascade.edge.tools.runner import run

    for option, address in (("--agent", agent), ("--cloud-url", cloud_url), ("--sink", sink)):
        if address is not None:
            check_address(option, address)
    if agent is None:
        built_family(family)
    log_to_stderr()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    transport = sink_transport = client_transport(
        insecure=insecure, ca=ca, cert=cert, key=key, token_file=token_file
    )
    with ExitStack() as stack:
        if agent is None:
            log_path = Path("reports") / "logs" / "edge-run.log"
            security = (
                None
                if insecure
                else development_security(Path(stack.enter_context(tempfile.TemporaryDirectory())))
            )
            started = stack.enter_context(
                EdgeProcess(family, cloud_url, log_path, security=security)
            )
            agent, transport = started.address, started.client
        out = stack.enter_context(open(output, "w")) if output else sys.stdout
        stats = run(
            source,
            agent,
            out,
            transport=transport,
            sink_transport=sink_transport,
            kind=kind,
            sink=sink,
            max_fps=max_fps,
            buffer_size=buffer,
            window=window,
            top_k=top_k,
            reconnect_timeout_s=reconnect_timeout or None,
            stop=stop,
        )
    Console(stderr=True).print(stats)
