"""deploy/grafana/edgecascade-fleet.json is a Grafana dashboard whose queries read what the agent
really exports: every metric and label of every PromQL expression is in the exposition of the
agent's own Metrics registry (haproxy_* and grpc_server_* are the gateway's: tests/integration/
test_grafana_dashboard_scrapes.py checks them, and these again, on real scrapes)."""

import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from edgecascade.edge.serving.metrics import Metrics
from edgecascade.edge.serving.statistics import Stamps
from edgecascade.router.cascade.audit import AgreementTracker
from edgecascade.router.cascade.cascade import Answers
from edgecascade.router.cascade.degraded import DegradedReason
from tests.unit.test_cascade_routing import manifest

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "edgecascade-fleet.json"
TARGET_LABELS = {"instance", "job"}  # added by Prometheus to every series it scrapes
GATEWAY_PREFIXES = ("haproxy_", "grpc_server_")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?\s*(\()?")
MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
KEYWORDS = {"and", "or", "unless", "bool", "offset"}
SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})? ", re.M)
SAMPLE_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="')


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def queries(board: dict) -> list[tuple[str, str]]:
    """(expression, legend) of every target of every panel."""
    return [
        (target["expr"], target.get("legendFormat", ""))
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]


def parsed(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) a PromQL expression uses: selectors, matchers, grouping."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    labels = {name.strip() for group in GROUPING.findall(text) for name in group.split(",")}
    text = GROUPING.sub("", text)
    metrics = set()
    for name, matchers, call in SELECTOR.findall(text):
        labels |= set(MATCHER.findall(matchers))
        if not call and name not in KEYWORDS:
            metrics.add(name)
    return metrics, labels - {""}


def exposed(text: str) -> dict[str, set[str]]:
    """Sample name -> its label names, from a Prometheus text exposition."""
    series: dict[str, set[str]] = defaultdict(set)
    for name, labels in SAMPLE.findall(text):
        series[name] |= set(SAMPLE_LABEL.findall(labels))
    return series


def unknown(board: dict, series: dict[str, set[str]], gateway: bool) -> list[str]:
    """What the dashboard's queries (the gateway's, or the others) use that `series` lacks."""
    wrong = []
    for expr, legend in queries(board):
        metrics, labels = parsed(expr)
        if any(m.startswith(GATEWAY_PREFIXES) for m in metrics) != gateway:
            continue
        wrong += [f"{expr}: no metric {m}" for m in sorted(metrics - series.keys())]
        known = TARGET_LABELS.union(*(series.get(m, set()) for m in metrics))
        legend_labels = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
        wrong += [f"{expr}: no label {label}" for label in sorted((labels | legend_labels) - known)]
    return wrong


def agent_exposition() -> str:
    """The agent's registry after an escalation answered degraded (budget) and an audit: every
    series the agent can expose has a sample."""
    pair = manifest()
    metrics = Metrics(pair, lambda: 0)
    tracker = AgreementTracker()
    tracker.record(pair.family, pair.edge.key, np.array([True, False]))
    metrics.watch_audit(tracker)
    answers = Answers(
        pair,
        probabilities=np.full((2, 3), 1 / 3),
        edge_confidence=np.array([0.9, 0.2]),
        edge_class_id=np.zeros(2, int),
        escalated=np.array([False, True]),
        edge_ms=1.0,
        cloud_ms=2.0,
        degraded_reason=DegradedReason.BUDGET,
        bytes_per_escalation=0,
    )
    metrics.answered(answers, Stamps(0, 10, 20, 30, 40))
    return metrics.exposition().decode()


def test_the_dashboard_is_a_grafana_dashboard_with_a_datasource_variable() -> None:
    board = dashboard()
    assert board["title"] and board["uid"] and isinstance(board["schemaVersion"], int)
    (datasource,) = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert datasource["query"] == "prometheus"
    reference = {"type": "prometheus", "uid": f"${{{datasource['name']}}}"}
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"]), "ids are unique"
    for panel in panels:
        assert panel["title"] and panel["datasource"] == reference, panel["title"]
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys() and panel["gridPos"]["x"] < 24
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == reference and target["refId"] and target["expr"]
    titles = " / ".join(p["title"].lower() for p in panels)
    for subject in ("escalation", "degraded", "latency", "versions", "agreement", "budget"):
        assert subject in titles


def test_every_agent_query_reads_metrics_and_labels_the_agent_exports() -> None:
    assert unknown(dashboard(), exposed(agent_exposition()), gateway=False) == []


def test_the_latency_panel_takes_p50_and_p95_from_the_histogram_buckets() -> None:
    (panel,) = [p for p in dashboard()["panels"] if "latency" in p["title"].lower()]
    exprs = [t["expr"] for t in panel["targets"]]
    for quantile, expr in zip(("0.5", "0.95"), exprs):
        assert expr.startswith(f"histogram_quantile({quantile},")
        assert "edgecascade_latency_seconds_bucket" in expr and "le" in parsed(expr)[1]


@pytest.mark.parametrize(
    ("expr", "metrics", "labels"),
    [
        (
            'sum by (le, hop) (rate(a_bucket{x=~"$v", y!="q"}[$__rate_interval]))',
            {"a_bucket"},
            {"le", "hop", "x", "y"},
        ),
        ('b / on(instance) group_left(family) c{z="a,b"}', {"b", "c"}, {"instance", "family", "z"}),
    ],
)
def test_the_query_reader_finds_metrics_and_labels(
    expr: str, metrics: set[str], labels: set[str]
) -> None:
    assert parsed(expr) == (metrics, labels)


def test_a_misnamed_metric_or_label_is_caught() -> None:
    board = {"panels": [{"targets": [{"expr": "rate(edgecascade_escalations[5m])"}]}]}
    series = exposed(agent_exposition())
    assert unknown(board, series, gateway=False) == [
        "rate(edgecascade_escalations[5m]): no metric edgecascade_escalations"
    ]
    board = {"panels": [{"targets": [{"expr": "sum by (tier) (edgecascade_degraded_total)"}]}]}
    assert unknown(board, series, gateway=False) == [
        "sum by (tier) (edgecascade_degraded_total): no label tier"
    ]
