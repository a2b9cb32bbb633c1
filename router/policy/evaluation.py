"""Accuracy against escalation rate on a family's test split: our temperature-scaled policies
next to KubeEdge Sedna's joint-inference filters, and the operating point `calibrate` chose.

Compared at equal edge cost: Sedna's filters score the same probabilities the edge answers with
(the mean of the views the manifest's policy computes, raw: temperature 1), and the cascade
keeps that answer where they do not escalate. Sedna on member 0 alone (1 view, what Sedna
would compute) is shown too, with its own cheaper and weaker edge answers. So is the family's
baseline edge model where the build made one (fashion: the 3-member ensemble served before the
wide CNN, on every view it has), answering alone with `max_prob`.

The test split only reports: temperatures are fit on the calibration split and the
operating point is the manifest's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
from numpy.typing import NDArray

from edgecascade.cloud.build.costs import (
    interleaved_p50_ms,
    latency_request,
    macs_per_image,
    member,
)
from edgecascade.cloud.build.families import FASHION_BASELINE_EDGE
from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.paths import baseline_model_file, edge_model_file
from edgecascade.router.policy.calibration import (
    Split,
    candidate_policies,
    cascade_curve,
    operating_point,
)
from edgecascade.router.policy.policies import (
    Booleans,
    Classes,
    EntropyPolicy,
    Floats,
    MaxProbabilityPolicy,
    ScorePolicy,
    policy_from_manifest,
)

# Sedna's hard-example filters score raw (uncalibrated) softmax outputs: ThresholdFilter
# (hard when the top-1 probability < threshold) and CrossEntropyFilter (hard when
# 1 + sum(p log p) / log K < threshold); both default to threshold 0.5.
SEDNA_FILTERS = {"sedna_threshold": MaxProbabilityPolicy, "sedna_cross_entropy": EntropyPolicy}
SEDNA_DEFAULT_THRESHOLD = 0.5
ONE_VIEW = "_member0"  # suffix of the Sedna filters on member 0's output alone
# The baseline edge model, on every view it has (members and mirror), answering alone (max_prob).
BASELINE = FASHION_BASELINE_EDGE
BASELINE_LOGITS = f"{BASELINE}_logits"

GOAL_MAX_DROP = 0.003
GOAL_MAX_ESCALATION = 0.30
CURVE_STEP = 0.0025  # escalation-rate spacing of the curves stored in the report
BOOTSTRAP_RESAMPLES = 1000  # paired bootstrap of the test split for the policy comparisons


@dataclass(frozen=True)
class Option:
    """One way to run the cascade: a score per input (escalate the least confident) and
    whether the edge answer it keeps is right."""

    score: Floats
    edge_correct: Booleans


def baselines(split: Split, served: ScorePolicy) -> dict[str, Option]:
    """Sedna's filters on the raw mean of `served`'s views, scoring the answer the edge serves;
    and (suffix ONE_VIEW) on member 0's raw output, answering with member 0."""
    served_probabilities = split.answer(served)[0]
    answer = served_probabilities.argmax(-1)
    same = type(served)(0.0, 1.0, served.mirror, served.ensemble)
    raw = split.answer(same)[0]
    one_view = MaxProbabilityPolicy(0.0)
    one_raw = split.answer(one_view)[0]
    options = {}
    for name, cls in SEDNA_FILTERS.items():
        options[name] = Option(cls.score(raw, answer), split.edge_correct(served))
        options[name + ONE_VIEW] = Option(
            cls.score(one_raw, one_raw.argmax(-1)), split.edge_correct(one_view)
        )
    return options


def _baseline(family_folder: Path) -> Option | None:
    """The baseline edge model's option on the test split (every view it has), at the
    temperature that calibrates those views on the calibration split; None when the build made
    none."""
    files = [family_folder / name for name in ("calibration.npz", "test_predictions.npz")]
    if not all(BASELINE_LOGITS in np.load(file) for file in files):
        return None
    calibration, test = (Split.load(file, edge=BASELINE_LOGITS) for file in files)
    views = MaxProbabilityPolicy(
        0.0, mirror=calibration.mirrored_logits is not None, ensemble=calibration.members > 1
    )
    policy = type(views)(0.0, calibration.fit_temperature(views), views.mirror, views.ensemble)
    return Option(test.confidence(policy), test.edge_correct(policy))


def _members(model: ov.Model) -> int:
    """Members of an edge model whose logits are [N, members, K]."""
    return int(model.outputs[0].get_partial_shape()[1].get_length())


def edge_costs(family_folder: Path, image_shape: tuple[int, ...]) -> dict[str, dict[str, float]]:
    """Per way of looking with the served edge model (and the baseline's, on all its views):
    views computed, multiply-accumulates per image and single-image latency p50 of the INT8
    edge model(s), all measured interleaved."""
    core = ov.Core()
    served = core.read_model(edge_model_file(family_folder))
    members = _members(served)
    alone = member(served, 0)
    runs: dict[str, tuple[ov.Model, int, int]] = {
        "member 0": (alone, 1, 1),
        "mirror": (alone, 2, 2),
    }
    if members > 1:
        runs |= {"ensemble": (served, 1, members), "ensemble+mirror": (served, 2, 2 * members)}
    if (file := baseline_model_file(family_folder, BASELINE)).exists():
        baseline = core.read_model(file)
        runs[BASELINE] = (baseline, 2, 2 * _members(baseline))
    image = np.zeros((1, *image_shape), np.uint8)
    latency = interleaved_p50_ms(
        {
            name: latency_request(core, model, np.repeat(image, images, 0), {})
            for name, (model, images, _) in runs.items()
        }
    )
    return {
        name: {
            "views": views,
            "macs_per_image": macs_per_image(model, image_shape) * images,
            "latency_ms_p50": latency[name],
        }
        for name, (model, images, views) in runs.items()
    }


def _options(
    split: Split, policies: list[ScorePolicy], served: ScorePolicy, baseline: Option | None
) -> dict[str, Option]:
    """Every policy's option (by label), then the baselines'."""
    ours = {p.label: Option(split.confidence(p), split.edge_correct(p)) for p in policies}
    return ours | baselines(split, served) | ({BASELINE: baseline} if baseline else {})


def _bootstrap_curves(
    split: Split, options: dict[str, Option], ks: Classes, resamples: int, seed: int = 0
) -> dict[str, NDArray[np.float64]]:
    """Cascade accuracy at k escalations on `resamples` resamples (with replacement) of the
    split, the same resamples for every option: {name: [resamples, len(ks)]}."""
    n = len(split.labels)
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(resamples)])
    out = {}
    for name, option in options.items():
        gain = split.cloud_correct.astype(np.int64) - option.edge_correct
        base = counts @ option.edge_correct.astype(np.int64)
        order = np.argsort(option.score, kind="stable")
        taken, gained = counts[:, order].cumsum(1), (counts[:, order] * gain[order]).cumsum(1)
        rows = np.empty((resamples, len(ks)))
        for b in range(resamples):
            # The k least confident of the resample: whole copies up to position j, then part.
            j = np.searchsorted(taken[b], ks)
            before = np.where(j > 0, taken[b][j - 1], 0)
            partial = (ks - before) * gain[order][np.minimum(j, n - 1)]
            rows[b] = base[b] + np.where(j > 0, gained[b][j - 1], 0) + partial
        out[name] = rows / n
    return out


def _significance(ours: Floats, baseline: Floats, rates: Floats, upto: float) -> dict[str, Any]:
    """Where the paired bootstrap's 95% interval of (ours - baseline) excludes 0, and in how many
    resamples ours is at least as accurate at every rate (how often that criterion could hold
    on a split of this size)."""
    gap = ours - baseline
    low, high = np.percentile(gap, [2.5, 97.5], axis=0)
    goal = rates <= upto
    return {
        "interval_pt": {
            "low": (low * 100).round(3).tolist(),
            "high": (high * 100).round(3).tolist(),
        },
        "significantly_less_accurate_at_rates": rates[high < 0].round(4).tolist(),
        "fraction_significantly_more_accurate": round(float((low > 0).mean()), 4),
        "fraction_significantly_more_accurate_up_to_goal_escalation": round(
            float((low[goal] > 0).mean()), 4
        ),
        "share_of_resamples_at_least_as_accurate_at_every_rate": round(
            float((gap >= -1e-12).all(axis=1).mean()), 4
        ),
    }


def _versus(ours: Floats, baseline: Floats, upto: int) -> dict[str, Any]:
    """How `ours` compares with `baseline` at every escalation count k (and k <= upto)."""
    n = len(ours) - 1
    diff = ours - baseline
    worst = int(np.argmin(diff))
    return {
        "at_least_as_accurate_everywhere": bool((diff >= 0).all()),
        "fraction_of_rates_at_least_as_accurate": round(float((diff >= 0).mean()), 4),
        "fraction_up_to_goal_escalation": round(float((diff[: upto + 1] >= 0).mean()), 4),
        "worst_deficit_pt": round(float(diff[worst]) * 100, 3),
        "worst_deficit_at_escalation": round(worst / n, 4),
        "best_surplus_pt": round(float(diff.max()) * 100, 3),
        "mean_difference_up_to_goal_escalation_pt": round(float(diff[: upto + 1].mean()) * 100, 4),
    }


def _point(option: Option, threshold: float, cloud_correct: Booleans) -> dict[str, float]:
    p = operating_point(option.score, threshold, option.edge_correct, cloud_correct)
    return {"escalation_rate": p.escalation_rate, "accuracy": p.cascade_accuracy}


def evaluate_family(family_folder: Path) -> dict[str, Any]:
    """The report `edgecascade router evaluate` writes (see README, Router)."""
    manifest = Manifest.load(family_folder / "manifest.json")
    calibration = Split.load(family_folder / "calibration.npz")
    test = Split.load(family_folder / "test_predictions.npz")
    chosen = policy_from_manifest(manifest.policy)
    policies = candidate_policies(calibration, kind=None, mirror=None, ensemble=None)
    n = len(test.labels)
    cloud = float(test.cloud_correct.mean())
    options = _options(test, policies, chosen, _baseline(family_folder))
    names = list(options)
    baseline_names = names[len(policies) :]
    curves = {
        name: cascade_curve(o.score, o.edge_correct, test.cloud_correct)[1]
        for name, o in options.items()
    }
    grid = np.unique(np.round(np.arange(0, 1 + CURVE_STEP / 2, CURVE_STEP) * n).astype(int))
    resampled = _bootstrap_curves(test, options, grid, BOOTSTRAP_RESAMPLES)
    upto = int(np.floor(GOAL_MAX_ESCALATION * n))
    served = Option(test.confidence(chosen), test.edge_correct(chosen))
    test_point = _point(served, chosen.threshold, test.cloud_correct)
    goal_accuracy = cloud - GOAL_MAX_DROP
    raw = type(chosen)(0.0, 1.0, chosen.mirror, chosen.ensemble)
    views = {p.looks: p for p in policies if isinstance(p, MaxProbabilityPolicy)}
    return {
        "family": manifest.family,
        "models": {"edge": manifest.edge.key, "cloud": manifest.cloud.key},
        "inputs": {"calibration": len(calibration.labels), "test": n},
        "temperature": chosen.temperature,
        "temperatures": {label: p.temperature for label, p in views.items()},
        "ece_15_bins": {
            split_name: {
                "before": round(split.calibration_error(raw), 5),
                "after": round(split.calibration_error(chosen), 5),
            }
            for split_name, split in (("calibration", calibration), ("test", test))
        },
        "accuracy": {"edge_only": float(served.edge_correct.mean()), "cloud_only": cloud},
        "edge_only_by_views": {
            label: float(test.edge_correct(p).mean()) for label, p in views.items()
        }
        | ({BASELINE: float(options[BASELINE].edge_correct.mean())} if BASELINE in options else {}),
        "edge_costs": edge_costs(family_folder, manifest.edge.preprocessing.shape),
        "baselines": baseline_names,
        "curves": {
            name: {
                "escalation_rate": (grid / n).round(4).tolist(),
                "accuracy": curve[grid].round(5).tolist(),
            }
            for name, curve in curves.items()
        },
        "least_escalation_meeting_accuracy_goal": {
            name: round(int(np.argmax(curve >= goal_accuracy - 1e-12)) / n, 4)
            for name, curve in curves.items()
        },
        "sedna_defaults": {
            name: {"threshold": SEDNA_DEFAULT_THRESHOLD}
            | _point(options[name], SEDNA_DEFAULT_THRESHOLD, test.cloud_correct)
            for name in baseline_names
            if name != BASELINE
        },
        "operating_point": {
            "policy": manifest.policy.model_dump(),
            "label": chosen.label,
            "how": manifest.notes.get("threshold", ""),
            "calibration": _point(
                Option(calibration.confidence(chosen), calibration.edge_correct(chosen)),
                chosen.threshold,
                calibration.cloud_correct,
            ),
            "test": test_point,
        },
        "goal": {
            "accuracy_at_least": goal_accuracy,
            "escalation_at_most": GOAL_MAX_ESCALATION,
            "met_at_operating_point": bool(
                test_point["accuracy"] >= goal_accuracy - 1e-12
                and test_point["escalation_rate"] <= GOAL_MAX_ESCALATION
            ),
            "accuracy_drop_pt": round((cloud - test_point["accuracy"]) * 100, 3),
            "calibrated_policy_vs_baselines": {
                name: _versus(curves[chosen.label], curves[name], upto) for name in baseline_names
            },
            "every_policy_vs_baselines": {
                ours: {name: _versus(curves[ours], curves[name], upto) for name in baseline_names}
                for ours in names
                if ours not in baseline_names
            },
            "calibrated_policy_vs_baselines_bootstrap": {
                "resamples": BOOTSTRAP_RESAMPLES,
                "rates": "every curve rate (CURVE_STEP apart)",
            }
            | {
                name: _significance(
                    resampled[chosen.label], resampled[name], grid / n, GOAL_MAX_ESCALATION
                )
                for name in baseline_names
            },
        },
    }


def plot_report(report: dict[str, Any], png: Path) -> None:
    """Accuracy against escalation rate, full range and zoomed on the goal region."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cloud = report["accuracy"]["cloud_only"]
    goal = report["goal"]
    point = report["operating_point"]
    curves = report["curves"]
    chosen = point["label"]
    ours = curves[chosen]
    fig, axes = plt.subplots(1, 3, figsize=(18, 5))
    # Baselines first (dashed, wide) so that our policies stay visible on top of them; the zoom
    # shows the baselines, the calibrated policy and the same kind with one view only.
    baselines = report["baselines"]
    names = sorted(curves, key=lambda name: name not in baselines)
    colors = dict(zip(names, plt.get_cmap("tab20")(range(20))))  # its 20 colours, in order
    zoomed = [name for name in names if name in {*baselines, chosen, point["policy"]["kind"]}]
    for ax, xmax, shown in zip(axes[:2], (1.0, 0.4), (names, zoomed)):
        for name in shown:
            style, width = ("--", 2.2) if name in baselines else ("-", 1.2 + (name == chosen))
            curve = curves[name]
            ax.plot(
                curve["escalation_rate"],
                curve["accuracy"],
                style,
                lw=width,
                color=colors[name],
                label=name,
            )
        ax.axhline(cloud, color="k", lw=0.8, label=f"cloud only {cloud:.2%}")
        ax.axhline(goal["accuracy_at_least"], color="k", ls=":", lw=0.8, label="cloud - 0.3 pt")
        ax.axvline(goal["escalation_at_most"], color="grey", ls=":", lw=0.8)
        ax.plot(
            point["test"]["escalation_rate"],
            point["test"]["accuracy"],
            "k*",
            ms=12,
            label=f"calibrated {point['label']} (test)",
        )
        for name, sedna in report["sedna_defaults"].items():
            ax.plot(
                sedna["escalation_rate"],
                sedna["accuracy"],
                "o",
                mfc="none",
                label=f"{name} @ {sedna['threshold']}",
            )
        ax.set_xlim(0, xmax)
        ax.set_xlabel("escalation rate (test split)")
        ax.set_ylabel("cascade accuracy")
        ax.grid(alpha=0.3)
    edge = report["accuracy"]["edge_only"]
    axes[1].set_ylim(edge - 0.002, cloud + 0.003)
    rates = np.asarray(ours["escalation_rate"])
    bootstrap = goal["calibrated_policy_vs_baselines_bootstrap"]
    for name in baselines:
        gap = (np.asarray(ours["accuracy"]) - np.asarray(curves[name]["accuracy"])) * 100
        (line,) = axes[2].plot(rates, gap, lw=1.2, label=f"{point['label']} - {name}")
        band = bootstrap[name]["interval_pt"]
        axes[2].fill_between(rates, band["low"], band["high"], color=line.get_color(), alpha=0.15)
    axes[2].axhline(0, color="k", lw=0.8)
    axes[2].axvline(goal["escalation_at_most"], color="grey", ls=":", lw=0.8)
    axes[2].set_xlim(0, 0.4)
    axes[2].set_xlabel("escalation rate (test split)")
    axes[2].set_ylabel("accuracy difference (points)")
    axes[2].set_title("calibrated policy minus baselines (band: paired bootstrap 95%)", fontsize=10)
    axes[2].grid(alpha=0.3)
    axes[2].legend(fontsize=8)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(
        f"{report['family']}: cascade accuracy vs escalation rate "
        f"(T = {report['temperature']:.3f} fit on calibration)"
    )
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
