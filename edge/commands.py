"""`edgecascade edge ...`: run an edge agent."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer

from edgecascade.cloud.common.serving import check_address, log_to_stderr, run_until_signalled
from edgecascade.edge.serving.server import serve
from edgecascade.edge.sources.base import describe_kinds, source_kinds

app = typer.Typer(help="The edge agent: OpenVINO next to the camera.", no_args_is_help=True)


@app.command("serve")
def serve_command(
    config: Annotated[
        Path | None, typer.Option(help="TOML file of settings (EdgeSettings fields)")
    ] = None,
    family: Annotated[
        str | None, typer.Option(help="model family to serve (default fashion)")
    ] = None,
    cloud_url: Annotated[
        str | None, typer.Option(help="Triton or gateway host:port; none: edge only")
    ] = None,
    sync_url: Annotated[
        str | None, typer.Option(help="ModelSync (gateway) host:port: follow model updates")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="OpenVINO device: CPU, GPU, AUTO, ... (default CPU)")
    ] = None,
    hint: Annotated[
        str | None, typer.Option(help="OpenVINO performance hint: LATENCY or THROUGHPUT")
    ] = None,
    precision: Annotated[
        str | None, typer.Option(help="edge IR: int8, or the fp32 reference")
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="address to listen on (default 127.0.0.1)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="gRPC port (default 50051)")] = None,
    threshold: Annotated[
        float | None, typer.Option(help="override the manifest's threshold")
    ] = None,
    cloud_timeout: Annotated[
        float | None, typer.Option(help="seconds allowed for one cloud call (default 1)")
    ] = None,
    breaker_failures: Annotated[
        int | None, typer.Option(help="cloud failures in a row that stop escalation (default 5)")
    ] = None,
    breaker_cooldown: Annotated[
        float | None, typer.Option(help="seconds before a stopped cloud is probed (default 0.5)")
    ] = None,
    artifacts: Annotated[Path | None, typer.Option(help="artifacts folder")] = None,
    max_in_flight: Annotated[
        int | None, typer.Option(help="requests at once; more get RESOURCE_EXHAUSTED (default 64)")
    ] = None,
    max_batch: Annotated[
        int | None, typer.Option(help="images in one KServe ModelInfer request (default 32)")
    ] = None,
    max_message_bytes: Annotated[
        int | None, typer.Option(help="largest gRPC message (default 16 MiB)")
    ] = None,
    grace: Annotated[
        float | None, typer.Option(help="seconds in-flight calls get on shutdown (default 5)")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Prometheus /metrics HTTP port; 0: off (default 0)")
    ] = None,
    fold_preprocessing: Annotated[
        bool | None,
        typer.Option(
            "--fold-preprocessing/--no-fold-preprocessing",
            help="crop and resize frames inside the edge model, not in cv2 (default on)",
        ),
    ] = None,
) -> None:
    """Serve the Cascade and KServe v2 gRPC APIs until SIGINT/SIGTERM. Settings come from
    --config (TOML), then EDGECASCADE_<SETTING> environment variables, then these options."""
    from edgecascade.edge.serving.config import load_settings
    from edgecascade.edge.tools.families import built_family

    settings = load_settings(  # a ConfigError is a UserError
        config,
        family=family,
        cloud_url=cloud_url,
        sync_url=sync_url,
        device=device,
        hint=hint,
        precision=precision,
        host=host,
        port=port,
        threshold=threshold,
        cloud_timeout_s=cloud_timeout,
        breaker_failures=breaker_failures,
        breaker_cooldown_s=breaker_cooldown,
        artifacts=artifacts,
        max_in_flight=max_in_flight,
        max_batch=max_batch,
        max_message_bytes=max_message_bytes,
        grace_s=grace,
        metrics_port=metrics_port,
        fold_preprocessing=fold_preprocessing,
    )
    for name, address in (("cloud_url", settings.cloud_url), ("sync_url", settings.sync_url)):
        if address:
            check_address(name, address)
    if not settings.sync_url:  # else a family not built here is fetched from ModelSync
        built_family(settings.family, settings.artifacts)
    run_until_signalled(lambda stop: serve(settings, stop))


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
) -> None:
    """Classify every frame of a source through an edge agent; one JSON line per frame."""
    import sys
    import threading
    from contextlib import ExitStack

    from rich.console import Console

    from edgecascade.edge.tools.families import built_family
    from edgecascade.edge.tools.process import EdgeProcess
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
    with ExitStack() as stack:
        if agent is None:
            log_path = Path("reports") / "logs" / "edge-run.log"
            agent = stack.enter_context(EdgeProcess(family, cloud_url, log_path)).address
        out = stack.enter_context(open(output, "w")) if output else sys.stdout
        stats = run(
            source,
            agent,
            out,
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
