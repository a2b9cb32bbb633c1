"""`edgecascade router ...`: the router's own commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from edgecascade.cloud.common import logs
from edgecascade.cloud.common.serving import run_until_signalled
from edgecascade.cloud.common.settings import command_options, option_help
from edgecascade.router.gateway.commands import upstreams_app
from edgecascade.router.gateway.settings import GatewaySettings, load_gateway_settings
from edgecascade.router.policy.commands import robustness_command

app = typer.Typer(
    help="The router: escalation policy, calibration, the gateway to Triton.", no_args_is_help=True
)
app.add_typer(upstreams_app, name="upstreams")


@app.callback()
def router() -> None:
    """The router: escalation policy, calibration, the gateway to Triton."""


def _setting(name: str, *flags: str) -> Any:
    """The option that sets GatewaySettings field `name` (help and default from the field)."""
    return typer.Option(*flags, help=option_help(GatewaySettings, name))


@app.command("serve")
def serve_command(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option(help="TOML file of settings (GatewaySettings fields)")
    ] = None,
    upstream: Annotated[list[str] | None, _setting("upstream")] = None,
    upstreams_file: Annotated[Path | None, _setting("upstreams_file")] = None,
    discover: Annotated[str | None, _setting("discover")] = None,
    dns_server: Annotated[str | None, _setting("dns_server")] = None,
    host: Annotated[str | None, _setting("host")] = None,
    port: Annotated[int | None, _setting("port")] = None,
    http_port: Annotated[int | None, _setting("http_port")] = None,
    probe_interval_s: Annotated[
        float | None, _setting("probe_interval_s", "--probe-interval")
    ] = None,
    registry: Annotated[Path | None, _setting("registry")] = None,
    examples_quota_bytes: Annotated[int | None, _setting("examples_quota_bytes")] = None,
    metrics_port: Annotated[int | None, _setting("metrics_port")] = None,
    health_port: Annotated[int | None, _setting("health_port")] = None,
    grace_s: Annotated[int | None, _setting("grace_s", "--grace")] = None,
    tls_cert: Annotated[Path | None, _setting("tls_cert")] = None,
    tls_key: Annotated[Path | None, _setting("tls_key")] = None,
    tls_ca: Annotated[Path | None, _setting("tls_ca")] = None,
    require_client_cert: Annotated[bool | None, _setting("require_client_cert")] = None,
    callers: Annotated[Path | None, _setting("callers")] = None,
    triton_ca: Annotated[Path | None, _setting("triton_ca")] = None,
    triton_cert: Annotated[Path | None, _setting("triton_cert")] = None,
    triton_key: Annotated[Path | None, _setting("triton_key")] = None,
    triton_server_name: Annotated[str | None, _setting("triton_server_name")] = None,
    triton_admin_key_file: Annotated[Path | None, _setting("triton_admin_key_file")] = None,
    log_format: Annotated[str | None, _setting("log_format")] = None,
    log_level: Annotated[str | None, _setting("log_level")] = None,
    access_log: Annotated[bool | None, _setting("access_log", "--access-log")] = None,
) -> None:
    """Serve KServe v2 gRPC in front of Triton endpoints through HAProxy (per-request load
    balancing, readiness checks, failover). Settings come from --config (TOML), then
    EDGECASCADE_GATEWAY_<SETTING> environment variables, then these options."""
    from edgecascade.router.gateway.gateway import serve
    from edgecascade.router.gateway.haproxy import haproxy_binary

    options, flags = command_options(ctx)  # the parameters above, by settings field
    options.pop("config", None)
    settings = load_gateway_settings(config, options, flags)  # a ConfigError is a UserError
    try:
        haproxy_binary()
    except RuntimeError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    logs.configure(settings.log_format, settings.log_level)
    run_until_signalled(lambda stop: serve(settings, stop))


class ListsPolicyKinds(TyperCommand):
    """A command whose help text says `{kinds}` where the registered policy kinds go, filled in
    each time the help is shown: kinds come from the registry, never from the text."""

    _help: str | None

    @property
    def help(self) -> str | None:
        from edgecascade.router.policy.policies import POLICIES

        return None if self._help is None else self._help.format(kinds=", ".join(POLICIES))

    @help.setter
    def help(self, text: str | None) -> None:
        self._help = text


FamilyArg = Annotated[str, typer.Option(help="family under the artifacts root")]


@app.command("calibrate", cls=ListsPolicyKinds)
def calibrate_command(
    family: FamilyArg = "fashion",
    target_accuracy: Annotated[
        str | None,
        typer.Option(
            help="absolute cascade accuracy (0.925) or a drop from cloud-only "
            "accuracy (cloud-0.3pt); default cloud-0.3pt"
        ),
    ] = None,
    max_escalation: Annotated[
        float | None, typer.Option(help="escalate at most this fraction of inputs instead")
    ] = None,
    policy: Annotated[
        str | None, typer.Option(help="a policy kind (listed above); default: the best one")
    ] = None,
    assurance: Annotated[
        float, typer.Option(help="one-sided confidence that the target holds; 0.5 = point estimate")
    ] = 0.95,
    mirror: Annotated[
        bool | None,
        typer.Option(
            "--mirror/--no-mirror",
            help="score the left-right mirror too (one more edge inference per image); "
            "default: whichever ranks the calibration split better",
        ),
    ] = None,
    window: Annotated[
        int,
        typer.Option(
            min=0,
            help="the target must hold over this many new inputs (a prediction bound); "
            "default 0: on average",
        ),
    ] = 0,
    ensemble: Annotated[
        bool | None,
        typer.Option(
            "--ensemble/--no-ensemble",
            help="score with every member of an ensemble edge model; "
            "default: whichever ranks the calibration split better",
        ),
    ] = None,
) -> None:
    """Fit the temperature and pick the policy threshold on the calibration split; store both
    in the family's manifest. Policy kinds: {kinds}."""
    from rich import print as rprint

    from edgecascade.cloud.common.paths import manifest_path
    from edgecascade.router.policy.calibration import Target, calibrate_manifest
    from edgecascade.router.policy.policies import UnknownPolicy, policy_class

    if target_accuracy is not None and max_escalation is not None:
        raise typer.BadParameter("give --target-accuracy or --max-escalation, not both")
    if policy is not None:
        try:
            policy_class(policy)
        except UnknownPolicy as e:
            raise typer.BadParameter(f"--policy: {e}") from None
    manifest_file = manifest_path(family)
    if not manifest_file.exists():
        raise typer.BadParameter(f"{manifest_file} not found: run `edgecascade models build`")
    try:
        if max_escalation is not None:
            target = Target(max_escalation=max_escalation)
        else:
            target = Target.parse_accuracy(target_accuracy or "cloud-0.3pt")
        result = calibrate_manifest(
            manifest_file, target, policy, assurance, mirror, ensemble, window or None
        )
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    if result is None:
        raise typer.BadParameter(f"{family} has no calibration split (calibration.npz)")
    point = result.point
    rprint(
        f"[bold]{family}[/]: {result.policy.label} threshold {result.policy.threshold:.4f}, "
        f"temperature {result.policy.temperature:.4f} (ECE {result.ece_before:.4f} -> "
        f"{result.ece_after:.4f}); calibration split: {point.escalation_rate:.1%} escalated, "
        f"cascade {point.cascade_accuracy:.2%} vs edge {point.edge_accuracy:.2%} / cloud "
        f"{point.cloud_accuracy:.2%}; stored in {manifest_file}"
    )


@app.command("evaluate", cls=ListsPolicyKinds)
def evaluate_command(
    family: FamilyArg = "fashion",
    report: Annotated[
        Path | None, typer.Option(help="JSON report; the PNG goes next to it")
    ] = None,
) -> None:
    """Accuracy vs escalation rate on the test split for each policy kind ({kinds}) and the
    Sedna baselines."""
    import json

    from rich import print as rprint

    from edgecascade.cloud.common.paths import family_dir
    from edgecascade.router.policy.evaluation import evaluate_family, plot_report

    folder = family_dir(family)
    missing = [
        f
        for f in ("manifest.json", "calibration.npz", "test_predictions.npz")
        if not (folder / f).exists()
    ]
    if missing:
        raise typer.BadParameter(
            f"{folder} lacks {', '.join(missing)}: run `edgecascade models build --family {family}`"
        )
    report = report or Path("reports") / f"router-{family}.json"
    result = evaluate_family(folder)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(result, indent=1) + "\n")
    plot_report(result, report.with_suffix(".png"))
    goal, point = result["goal"], result["operating_point"]["test"]
    versus = goal["calibrated_policy_vs_baselines"]
    rprint(
        f"[bold]{family}[/] test split: {result['operating_point']['label']} escalates "
        f"{point['escalation_rate']:.1%}, cascade {point['accuracy']:.2%} vs cloud-only "
        f"{result['accuracy']['cloud_only']:.2%} (drop {goal['accuracy_drop_pt']:.2f} pt): goal "
        f"{'met' if goal['met_at_operating_point'] else 'MISSED'}; at least as accurate as "
        + ", ".join(
            f"{name} at {v['fraction_of_rates_at_least_as_accurate']:.0%} of rates "
            f"(worst {v['worst_deficit_pt']:+.2f} pt)"
            for name, v in versus.items()
        )
    )
    rprint(_edge_options_table(result))
    rprint(f"wrote {report} and {report.with_suffix('.png')}")


def _edge_options_table(report: dict[str, Any]) -> Any:
    """Each way to compute the edge answer: its cost beside its accuracy and the escalation
    `max_prob` on it needs to come within 0.3 pt of cloud-only (test split)."""
    from rich.table import Table

    from edgecascade.router.policy.evaluation import BASELINE

    table = Table(title="edge options (INT8, test split)")
    for column in ("option", "views", "MACs/image", "p50 ms", "edge-only", "escalation to goal"):
        table.add_column(column, justify="left" if column == "option" else "right")
    least = report["least_escalation_meeting_accuracy_goal"]
    for name, cost in report["edge_costs"].items():
        curve = (
            name if name == BASELINE else "max_prob" + ("" if name == "member 0" else f"+{name}")
        )
        table.add_row(
            name,
            str(cost["views"]),
            f"{cost['macs_per_image'] / 1e6:.2f}M",
            f"{cost['latency_ms_p50']:.3f}",
            f"{report['edge_only_by_views'][name]:.2%}",
            f"{least[curve]:.1%}",
        )
    return table


app.command("robustness")(robustness_command)

if __name__ == "__main__":
    app()
