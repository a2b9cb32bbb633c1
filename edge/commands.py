"""`edgecascade edge ...`: run an edge agent."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Annotated, Optional

import typer

from edge.agent import EdgeSettings
from edge.server import serve

app = typer.Typer(help="The edge agent: OpenVINO next to the camera.", no_args_is_help=True)


@app.command("serve")
def serve_command(
    family: Annotated[str, typer.Option(help="model family to serve")] = "fashion",
    cloud_url: Annotated[Optional[str], typer.Option(help="Triton or gateway host:port; none: edge only")] = None,
    device: Annotated[str, typer.Option(help="OpenVINO device: CPU, GPU, AUTO, ...")] = "CPU",
    hint: Annotated[str, typer.Option(help="OpenVINO performance hint: LATENCY or THROUGHPUT")] = "LATENCY",
    host: str = "127.0.0.1",
    port: int = 50051,
    threshold: Annotated[Optional[float], typer.Option(help="override the manifest's threshold")] = None,
    cloud_timeout: Annotated[float, typer.Option(help="seconds allowed for one cloud call")] = 1.0,
    artifacts: Annotated[Optional[Path], typer.Option(help="artifacts folder")] = None,
) -> None:
    """Serve the Cascade gRPC API until SIGINT/SIGTERM."""
    settings = EdgeSettings(
        family=family, cloud_url=cloud_url, device=device, hint=hint, host=host, port=port,
        threshold=threshold, cloud_timeout_s=cloud_timeout,
        **({"artifacts": artifacts} if artifacts else {}),
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    asyncio.run(main())
