"""`edgecascade router robustness`: the cascade on corrupted test images (policy/robustness.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgecascade.cloud.common.errors import UserError


class FamilyNotBuilt(UserError):
    """The family folder lacks what `models build` writes."""


def robustness_command(
    family: Annotated[str, typer.Option(help="family under the artifacts root")] = "fashion",
    out: Annotated[
        Path | None,
        typer.Option(help="JSON report (default reports/robustness-FAMILY.json); PNG next to it"),
    ] = None,
    corruption: Annotated[
        list[str] | None, typer.Option(help="corruption to apply (repeatable); default: all")
    ] = None,
    severity: Annotated[
        list[int] | None, typer.Option(help="severity 1-5 (repeatable); default: all")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="the first N test images; default: all 10k")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the corruptions' randomness")] = 0,
) -> None:
    """Edge-only, cloud-only and cascade accuracy (at the manifest's threshold) and escalation
    on the test split under each corruption and severity, with averages and the goals."""
    import json

    from rich import print as rprint
    from rich.progress import Progress

    from edgecascade.cloud.build import corruptions
    from edgecascade.cloud.common.paths import family_dir
    from edgecascade.router.policy.robustness import plot_robustness, robustness_report

    folder = family_dir(family)
    if not (folder / "manifest.json").exists():
        raise FamilyNotBuilt(
            f"{folder} has no manifest.json: run `edgecascade models build --family {family}`"
        )
    # a user's mistake is reported before the progress bar shows
    names = [corruptions.corruption(name).name for name in corruption or corruptions.CORRUPTIONS]
    severities = [corruptions.checked_severity(s) for s in severity or corruptions.SEVERITIES]
    out = out or Path("reports") / f"robustness-{family}.json"
    with Progress() as progress:
        task = progress.add_task("corrupting", total=len(names) * len(severities))
        report = robustness_report(
            folder,
            names,
            severities,
            limit,
            seed,
            lambda done: progress.update(task, advance=1, description=done),
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    plot_robustness(report, out.with_suffix(".png"))
    mean, goals, clean = report["average"]["all"], report["goals"], report["clean"]
    rprint(
        f"[bold]{family}[/] {report['images']} test images, {report['policy']['label']}: clean "
        f"edge {clean['edge_only']:.2%} / cloud {clean['cloud_only']:.2%} / cascade "
        f"{clean['cascade']:.2%} ({clean['escalation_rate']:.1%} escalated); corrupted, on "
        f"average: edge {mean['edge_only']:.2%} / cloud {mean['cloud_only']:.2%} / cascade "
        f"{mean['cascade']:.2%} ({mean['escalation_rate']:.1%} escalated), cloud "
        f"{goals['cloud_margin_pt']:+.1f} pt over the edge, cascade recovers "
        + ("n/a" if goals["recovered"] is None else f"{goals['recovered']:.0%}")
        + f" of the edge's loss\nwrote {out} and {out.with_suffix('.png')}"
    )
