"""`edgecascade`: one CLI, a thin dispatcher to each package's own commands."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from cloud import commands as cloud_commands
from edge import commands as edge_commands

app = typer.Typer(help="Edge-to-cloud inference cascade: OpenVINO at the edge, Triton in the cloud.",
                  no_args_is_help=True)
app.add_typer(edge_commands.app, name="edge")
app.add_typer(cloud_commands.app, name="cloud")
models = typer.Typer(help="Model families: build, inspect.", no_args_is_help=True)
app.add_typer(models, name="models")
console = Console()


@models.command("build")
def models_build(
    family: Annotated[Optional[list[str]], typer.Option(help="family to build (repeatable); default: all")] = None,
) -> None:
    """Build a family's edge (INT8 IR) and cloud (ONNX) models, manifest and threshold."""
    from cloud.build import build_family
    from cloud.families import FAMILIES
    from cloud.paths import manifest_path
    from router.calibration import calibrate_manifest

    for name in family or list(FAMILIES):
        with console.status(f"building {name}"):
            manifest = build_family(name)
        point = calibrate_manifest(manifest_path(name))
        console.print(f"[bold]{name}[/]: edge {manifest.edge.key}, cloud {manifest.cloud.key}")
        console.print_json(data={"edge": manifest.edge.metrics, "cloud": manifest.cloud.metrics})
        if point:
            console.print(
                f"threshold {point.threshold:.4f}: {point.escalation_rate:.1%} escalated, cascade "
                f"{point.cascade_accuracy:.2%} vs edge {point.edge_accuracy:.2%} / cloud "
                f"{point.cloud_accuracy:.2%} (calibration split)"
            )


@app.command()
def demo(
    family: Annotated[str, typer.Option(help="fashion or imagenet")] = "fashion",
    limit: Annotated[Optional[int], typer.Option(help="number of test frames (default: all)")] = None,
    threshold: Annotated[Optional[float], typer.Option(help="override the manifest's threshold")] = None,
    fps: Annotated[float, typer.Option(help="camera frame rate; 0: as fast as answered")] = 0.0,
    in_flight: Annotated[int, typer.Option(help="frames awaiting an answer at once")] = 1,
    report: Annotated[Optional[Path], typer.Option(help="JSON report path")] = None,
) -> None:
    """Start Triton and an edge agent, stream test frames camera-style, report."""
    from edge.demo import run_demo

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop children on SIGTERM too
    run_demo(family, limit, threshold, report or Path("reports") / f"demo-{family}.json", fps, in_flight)


if __name__ == "__main__":
    app()
