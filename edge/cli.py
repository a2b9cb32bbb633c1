"""`edgecascade`: one CLI, a thin dispatcher to each package's own commands."""

from __future__ import annotations

import json
import re
import signal
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from edgecascade.cloud.build.adapt_recipe import Recipe
from edgecascade.cloud.common import auth_commands, certs_commands
from edgecascade.cloud.common.errors import UserError
from edgecascade.cloud.common.serving import user_errors
from edgecascade.cloud.registry import commands as registry_commands
from edgecascade.cloud.triton import commands as cloud_commands
from edgecascade.edge import commands as edge_commands
from edgecascade.edge.tools.families import built_family, known_family
from edgecascade.router import commands as router_commands


class Commands(TyperGroup):
    """The top-level group: every command runs inside `user_errors`, so a user's mistake is
    one `error: ...` line and exit code 2 (with the entry point and with typer's CliRunner)."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        with user_errors():
            return super().main(*args, **kwargs)


app = typer.Typer(
    cls=Commands,
    help="Edge-to-cloud inference cascade: OpenVINO at the edge, Triton in the cloud.",
    no_args_is_help=True,
)
app.add_typer(edge_commands.app, name="edge")
app.add_typer(cloud_commands.app, name="cloud")
app.add_typer(router_commands.app, name="router")
app.add_typer(certs_commands.app, name="certs")
app.add_typer(auth_commands.app, name="auth")
models = typer.Typer(
    help="Model families: build, publish to the registry, list.", no_args_is_help=True
)
app.add_typer(models, name="models")
models.command("publish")(registry_commands.publish)
models.command("activate")(registry_commands.activate)
models.command("list")(registry_commands.list_models)
bench = typer.Typer(help="Benchmarks that write reports.", no_args_is_help=True)
app.add_typer(bench, name="bench")
console = Console()


def _print_version(value: bool) -> None:
    if value:
        print(f"edgecascade {package_version('edgecascade')}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="print the version"),
    ] = False,
) -> None:
    """Edge-to-cloud inference cascade: OpenVINO at the edge, Triton in the cloud."""


@models.command("build")
def models_build(
    family: Annotated[
        list[str] | None, typer.Option(help="family to build (repeatable); default: all")
    ] = None,
) -> None:
    """Build a family's edge (INT8 IR) and cloud (ONNX) models, manifest and threshold."""
    from edgecascade.cloud.build.builder import build_family
    from edgecascade.cloud.build.families import FAMILIES
    from edgecascade.router.policy.calibration import calibrate_family

    names = [known_family(name) for name in family or FAMILIES]
    for name in names:
        with console.status(f"building {name}"):
            manifest = build_family(name)
        calibrated = calibrate_family(name)
        console.print(f"[bold]{name}[/]: edge {manifest.edge.key}, cloud {manifest.cloud.key}")
        console.print_json(data={"edge": manifest.edge.metrics, "cloud": manifest.cloud.metrics})
        if calibrated:
            point = calibrated.point
            console.print(
                f"{calibrated.policy.name} threshold {point.threshold:.4f} at temperature "
                f"{calibrated.policy.temperature:.3f}: {point.escalation_rate:.1%} escalated, "
                f"cascade {point.cascade_accuracy:.2%} vs edge {point.edge_accuracy:.2%} / cloud "
                f"{point.cloud_accuracy:.2%} (calibration split)"
            )


@models.command("adapt")
def models_adapt(
    family: Annotated[str, typer.Option(help="the family (fashion)")],
    registry: registry_commands.RegistryOption = None,
    examples: Annotated[
        list[Path] | None,
        typer.Option(help="an example store file (repeatable); default: every edge's uploads"),
    ] = None,
    epochs: Annotated[
        int, typer.Option(min=1, help="passes over the training examples")
    ] = Recipe.epochs,
    publish: Annotated[
        bool, typer.Option(help="publish the new version when the gate passes")
    ] = True,
    report: Annotated[Path, typer.Option(help="JSON report path")] = Path(
        "reports/models-adapt.json"
    ),
) -> None:
    """Distil the cloud's answers on collected examples into a new edge model and publish it,
    signed, only if it is no worse on the calibration split and better on held-out examples."""
    from edgecascade.cloud.registry.examples import received_files
    from edgecascade.cloud.registry.store import Registry
    from edgecascade.edge.tools.adapt_examples import adapt, collect
    from edgecascade.edge.tools.bench_adapt import distil_progress

    known_family(family)
    store = Registry(registry)
    files = examples or received_files(store.root, family)
    collected = collect(files, family)
    with distil_progress() as step:
        out = adapt(store, family, collected, Recipe(epochs=epochs), publish, step)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(out, indent=1) + "\n")
    old, new = out["accuracy"]["old"], out["accuracy"]["new"]
    console.print(
        f"[bold]{family}[/]: {out['examples']['training']} examples trained on, "
        f"{out['examples']['held_out']} held out ({out['examples']['bytes']:,} bytes)"
    )
    console.print(
        f"calibration split {old['calibration']:.2%} -> {new['calibration']:.2%}, held-out "
        f"agreement with the cloud {old['held_out']:.2%} -> {new['held_out']:.2%}"
    )
    verdict = "[green]passed[/]" if out["gate"]["passed"] else "[red]refused[/]"
    console.print(f"gate {verdict}: {'; '.join(out['gate']['reasons'])}")
    version = out["published_version"]
    console.print(f"published {family} v{version}" if version else "nothing published")
    console.print(f"report: {report}")


@app.command()
def status(
    agent: Annotated[list[str], typer.Option(help="edge agent host:port (repeatable)")],
    json_out: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    ca: edge_commands.CaOption = None,
    cert: edge_commands.CertOption = None,
    key: edge_commands.KeyOption = None,
    token_file: edge_commands.TokenFileOption = None,
    insecure: edge_commands.InsecureOption = False,
) -> None:
    """Each edge agent's family, model versions, health, breaker and recent cloud latency;
    exit code 1 when any agent is unreachable or not serving."""
    from edgecascade.edge.serving.security import client_transport
    from edgecascade.edge.tools.fleet_status import agent_status, status_table

    transport = client_transport(
        insecure=insecure, ca=ca, cert=cert, key=key, token_file=token_file
    )
    rows = [agent_status(address, transport) for address in agent]
    if json_out:
        print(json.dumps(rows, indent=2))  # plain: no wrapping of long values
    else:
        console.print(status_table(rows))
    if any(row["health"] != "SERVING" for row in rows):
        raise typer.Exit(1)


DRIFT = "drift scenario"
SCENARIOS = ("basic", "drift")


@app.command()
def demo(
    family: Annotated[str, typer.Option(help="fashion or imagenet")] = "fashion",
    scenario: Annotated[
        str,
        typer.Option(
            help="basic: stream the test frames; drift: they turn to a corruption midway, the "
            "edge collects, one adapt round, the new version rolls out (fashion)"
        ),
    ] = "basic",
    limit: Annotated[int | None, typer.Option(help="number of test frames (default: all)")] = None,
    threshold: Annotated[
        float | None, typer.Option(help="override the manifest's threshold (basic)")
    ] = None,
    fps: Annotated[
        float | None,
        typer.Option(help="camera frame rate; 0: as fast as answered (default: 0; drift: 30)"),
    ] = None,
    in_flight: Annotated[int, typer.Option(help="frames awaiting an answer at once")] = 1,
    report: Annotated[Path | None, typer.Option(help="JSON report path")] = None,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure", help="the agent serves plaintext, without TLS and caller checks (basic)"
        ),
    ] = False,
    corruption: Annotated[
        str, typer.Option(help="a corruption held out of training", rich_help_panel=DRIFT)
    ] = "pixelate",
    severity: Annotated[int, typer.Option(help="1-5", rich_help_panel=DRIFT)] = 3,
    clean_frames: Annotated[
        int, typer.Option(help="frames before the corruption starts", rich_help_panel=DRIFT)
    ] = 300,
    examples: Annotated[
        int,
        typer.Option(help="examples the cloud holds when the round starts", rich_help_panel=DRIFT),
    ] = 600,
    after_frames: Annotated[
        int, typer.Option(help="frames streamed after the roll-out", rich_help_panel=DRIFT)
    ] = 1000,
    epochs: Annotated[
        int, typer.Option(help="the round's passes over the examples", rich_help_panel=DRIFT)
    ] = Recipe.epochs,
    audit_rate: Annotated[
        float, typer.Option(help="share of confident answers audited", rich_help_panel=DRIFT)
    ] = 0.25,
) -> None:
    """Start Triton and an edge agent, stream test frames camera-style, report. The agent
    serves mutual TLS and checks a token, with certificates made for the run. --scenario
    drift adds a registry the agent follows and one adapt round (plaintext on loopback),
    and writes a PNG beside the report."""
    if scenario not in SCENARIOS:
        raise UserError(f"--scenario {scenario!r}: give one of {', '.join(SCENARIOS)}")
    # SIGINT and SIGTERM stop the children, also where the demo was started with them ignored
    # or blocked (a background job of a non-interactive shell; Python keeps what it inherits)
    stops = {signal.SIGINT, signal.SIGTERM}
    for stop in stops:
        signal.signal(stop, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
    suffix = "-drift" if scenario == "drift" else ""
    path = report or Path("reports") / f"demo-{family}{suffix}.json"
    if scenario == "drift":
        from edgecascade.edge.tools.demo_drift import DriftOptions, run_drift

        if family != "fashion" or threshold is not None:
            raise UserError(
                "--scenario drift runs on fashion with each version's calibrated threshold: "
                "drop --family and --threshold"
            )
        options = DriftOptions(
            corruption, severity, clean_frames, examples, after_frames, epochs, audit_rate,
            30.0 if fps is None else fps, in_flight, limit,
        )  # fmt: skip
        run_drift(options, path)
        return
    from edgecascade.edge.tools.demo import run_demo

    run_demo(family, limit, threshold, path, fps or 0.0, in_flight, insecure)


@bench.command("edge")
def bench_edge(
    family: Annotated[str, typer.Option(help="fashion or imagenet")] = "fashion",
    report: Annotated[Path | None, typer.Option(help="JSON report path")] = None,
    seconds: Annotated[float, typer.Option(help="seconds per measurement")] = 5.0,
    clients: Annotated[int, typer.Option(help="concurrent unary clients")] = 16,
    streams: Annotated[int, typer.Option(help="concurrent ClassifyStreams")] = 2,
    precision: Annotated[
        list[str] | None, typer.Option(help="int8 and/or fp32 (repeatable)")
    ] = None,
) -> None:
    """The edge agent over gRPC vs OpenVINO's benchmark_app on the same IR, INT8 and FP32."""
    from edgecascade.edge.tools.bench import PRECISIONS, run_bench

    run_bench(
        family,
        report or Path("reports") / f"bench-edge-{family}.json",
        seconds,
        clients,
        streams,
        precisions=tuple(precision or PRECISIONS),
    )


@bench.command("preprocessing")
def bench_preprocessing(
    family: Annotated[str, typer.Option(help="fashion or imagenet")] = "imagenet",
    report: Annotated[Path | None, typer.Option(help="JSON report path")] = None,
    rounds: Annotated[int, typer.Option(min=1, help="timed passes over the frames")] = 10,
) -> None:
    """Crop and resize in cv2 vs folded into the edge model, interleaved, on real photos."""
    from edgecascade.edge.tools.bench_preprocessing import run_bench

    built_family(family)
    path = report or Path("reports") / f"bench-preprocessing-{family}.json"
    console.print_json(data=run_bench(family, path, rounds))


@bench.command("model-sync")
def bench_model_sync(
    report: Annotated[Path, typer.Option(help="JSON report path")] = Path(
        "reports/bench-model-sync.json"
    ),
    size_mib: Annotated[int, typer.Option(help="artifact size in MiB")] = 64,
    repeats: Annotated[int, typer.Option(help="measurements per figure (median reported)")] = 5,
) -> None:
    """ModelSync on loopback: FetchArtifact throughput, publish-to-watcher latency."""
    from edgecascade.router.sync.bench import run_bench

    console.print_json(data=run_bench(report, size_mib, repeats))


@bench.command("gateway")
def bench_gateway(
    report: Annotated[Path, typer.Option(help="JSON report path")] = Path(
        "reports/bench-gateway.json"
    ),
    calls: Annotated[int, typer.Option(help="ModelInfer calls per path")] = 3000,
) -> None:
    """One escalation through the router gateway vs straight to Triton, interleaved."""
    from edgecascade.router.gateway.bench import run_bench

    console.print_json(data=run_bench(report, calls))


@bench.command("adapt")
def bench_adapt(
    family: Annotated[str, typer.Option(help="the family (fashion)")] = "fashion",
    corruption: Annotated[str, typer.Option(help="a held-out corruption")] = "pixelate",
    severity: Annotated[int, typer.Option(help="1-5")] = 3,
    examples: Annotated[
        int, typer.Option(min=1, max=50_000, help="cloud-answered images for the round")
    ] = 5000,
    epochs: Annotated[int, typer.Option(min=1, help="passes over the examples")] = Recipe.epochs,
    fps: Annotated[float, typer.Option(min=0.0, help="camera frames/s, for the uplink")] = 5.0,
    report: Annotated[Path, typer.Option(help="JSON report path")] = Path(
        "reports/bench-adapt.json"
    ),
) -> None:
    """One `models adapt` round on a simulated drift, judged on the shifted and clean test
    split: escalation to come within 0.3 pt of cloud-only, edge accuracy, uplink bytes."""
    from edgecascade.edge.tools.bench_adapt import run_bench

    if family != "fashion":
        raise UserError(f"bench adapt runs on Fashion-MNIST: family {family!r}; use fashion")
    folder = built_family(family).parent
    recipe = Recipe(epochs=epochs)
    console.print_json(data=run_bench(folder, corruption, severity, examples, recipe, report, fps))


@bench.command("perf-analyzer")
def bench_perf_analyzer(
    report: Annotated[Path, typer.Option(help="JSON report path")] = Path(
        "reports/bench-perf-analyzer.json"
    ),
    concurrency_range: Annotated[
        str, typer.Option(help="perf_analyzer's --concurrency-range, start:end:step")
    ] = "1:4:3",
    measurement_interval: Annotated[
        int, typer.Option(min=100, help="ms per measurement window")
    ] = 2000,
    stability_percentage: Annotated[
        int, typer.Option(min=1, help="% the last 3 windows may differ")
    ] = 10,
    images: Annotated[int, typer.Option(min=1, max=10_000, help="test images sent")] = 100,
    protocol: Annotated[
        list[str] | None,
        typer.Option(help="grpc or http (KServe v2 REST); repeat for both, side by side"),
    ] = None,
) -> None:
    """Triton's perf_analyzer, unmodified, on the edge agent, the gateway and Triton, one run."""
    from edgecascade.edge.tools.bench_perf_analyzer import PROTOCOLS, Window, run_bench

    protocols = tuple(dict.fromkeys(protocol or ["grpc"]))
    if unknown := [p for p in protocols if p not in PROTOCOLS]:
        raise UserError(f"--protocol {unknown[0]!r}: give {' or '.join(PROTOCOLS)}")

    if not re.fullmatch(r"[1-9][0-9]*(:[1-9][0-9]*(:[1-9][0-9]*)?)?", concurrency_range):
        raise UserError(
            f"--concurrency-range {concurrency_range!r}: give start[:end[:step]], e.g. 1:4:3"
        )
    window = Window(concurrency_range, measurement_interval, stability_percentage)
    run_bench(report, window, images, protocols)


@bench.command("cluster")
def bench_cluster(
    report: Annotated[Path, typer.Option(help="JSON report path")] = Path(
        "reports/bench-cluster.json"
    ),
    p99_ms: Annotated[float, typer.Option(help="p99 latency target (ms)")] = 20.0,
    seconds: Annotated[float, typer.Option(help="seconds per rate step")] = 2.0,
) -> None:
    """Capacity of one Triton replica and of one gateway at a p99 target, for sizing."""
    from edgecascade.router.gateway.cluster_bench import run_cluster_bench

    console.print_json(data=run_cluster_bench(report, p99_ms, seconds))


if __name__ == "__main__":
    app()
