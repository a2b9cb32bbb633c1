"""The agent's Prometheus metrics, named, typed and labelled as Triton's own where there is a
Triton counterpart (nv_inference_* per model and version, nv_cpu_*), edgecascade_* for the
cascade's, process_* for the agent's process; served on GET /metrics only."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import psutil
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edgecascade.cloud.common.manifest import Manifest
from edgecascade.edge.serving.statistics import Stamps, Statistics, VersionStatistics
from edgecascade.router.cascade.audit import AgreementTracker
from edgecascade.router.cascade.cascade import Answers
from edgecascade.router.cascade.degraded import DegradedReason
from edgecascade.router.sync.uploader import ExampleUploader

# Triton's per-model series, under Triton's names, types and labels, read from the statistics
# (prometheus_client would add `_total` to a counter's samples; Triton's have none).
TRITON_COUNTERS = {
    "nv_inference_request_success": "Number of successful inference requests, all batch sizes",
    "nv_inference_request_failure": "Number of failed inference requests, all batch sizes",
    "nv_inference_count": "Number of inferences performed (does not include cached requests)",
    "nv_inference_exec_count": "Number of model executions performed (one per batch)",
    "nv_inference_request_duration_us": "Cumulative inference request duration in microseconds",
    "nv_inference_queue_duration_us": "Cumulative inference queuing duration in microseconds",
    "nv_inference_compute_input_duration_us": "Cumulative compute input duration in microseconds",
    "nv_inference_compute_infer_duration_us": "Cumulative compute inference duration in "
    "microseconds",
    "nv_inference_compute_output_duration_us": "Cumulative inference compute output duration "
    "in microseconds",
}
PENDING = "nv_inference_pending_request_count"
INSECURE_HOPS = ("agent", "cloud")
UPDATE_FAILURES = ("watch", "refused", "download", "activate")
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _TritonSeries(Collector):
    """Triton's per-model counters and pending-request gauge, from `statistics` at each scrape;
    every version served so far keeps its series, the failure reasons from 0."""

    def __init__(self, statistics: Statistics):
        self._statistics = statistics

    def collect(self) -> Iterator[Metric]:
        model = self._statistics.name
        versions = list(self._statistics.versions.items())  # the loop adds versions
        for name, doc in TRITON_COUNTERS.items():
            metric = Metric(name, doc, "counter")
            for version, stats in versions:
                labels = {"model": model, "version": version}
                if name == "nv_inference_request_failure":
                    for reason, count in stats.failures.items():
                        metric.add_sample(name, {**labels, "reason": reason}, count)
                else:
                    metric.add_sample(name, labels, _counter(name, stats))
            yield metric
        pending = Metric(PENDING, "Instantaneous number of pending requests", "gauge")
        for version, stats in versions:
            pending.add_sample(PENDING, {"model": model, "version": version}, stats.pending)
        yield pending


class _AuditSeries(Collector):
    """The audit's agreement with the cloud per family and edge version, at each scrape."""

    def __init__(self, tracker: AgreementTracker):
        self._tracker = tracker

    def collect(self) -> Iterator[Metric]:
        entries = list(self._tracker.entries.values())
        audited = Metric("edgecascade_audited", "Confident edge answers audited", "counter")
        agreed = Metric(
            "edgecascade_audit_agreed", "Audited answers the cloud agreed with", "counter"
        )
        agreement = Metric(
            "edgecascade_audit_agreement",
            "Agreement of audited edge answers with the cloud: the estimate and its 95% Wilson "
            "interval (bound=estimate|lower|upper)",
            "gauge",
        )
        for entry in entries:
            labels = {"family": entry.family, "edge": entry.edge_version}
            audited.add_sample("edgecascade_audited_total", labels, entry.audited)
            agreed.add_sample("edgecascade_audit_agreed_total", labels, entry.agreed)
            lower, upper = entry.interval
            for bound, value in (("estimate", entry.rate), ("lower", lower), ("upper", upper)):
                agreement.add_sample(
                    "edgecascade_audit_agreement", {**labels, "bound": bound}, value
                )
        yield from (audited, agreed, agreement)


class _UploadSeries(Collector):
    """The uploads of collected examples to ModelSync, at each scrape."""

    def __init__(self, uploader: ExampleUploader):
        self._uploader = uploader

    def collect(self) -> Iterator[Metric]:
        uploaded = Metric(
            "edgecascade_examples_uploaded",
            "Collected examples uploaded, by outcome: kept by the cloud side, or a duplicate of "
            "one it already had",
            "counter",
        )
        name = "edgecascade_examples_uploaded_total"
        uploaded.add_sample(name, {"outcome": "kept"}, self._uploader.uploaded)
        uploaded.add_sample(name, {"outcome": "duplicate"}, self._uploader.duplicates)
        failures = Metric(
            "edgecascade_example_upload_failures",
            "Uploads of collected examples that stopped with an error (tried again later)",
            "counter",
        )
        failures.add_sample(
            "edgecascade_example_upload_failures_total", {}, self._uploader.failures
        )
        yield from (uploaded, failures)


def _counter(name: str, stats: VersionStatistics) -> float:
    """The value of Triton counter `name` (not the failures) in `stats`."""
    stage = name.removeprefix("nv_inference_").removesuffix("_duration_us")
    if stage in stats.stages:
        return stats.stages[stage].ns / 1e3
    return {
        "nv_inference_request_success": stats.success.count,
        "nv_inference_count": stats.inference_count,
        "nv_inference_exec_count": stats.execution_count,
        "nv_inference_request_duration_us": stats.success.ns / 1e3,
    }[name]


def _host_gauges(registry: CollectorRegistry) -> None:
    """Triton's host CPU and memory gauges, and this process's own (prometheus_client)."""
    Gauge("nv_cpu_utilization", "CPU utilization rate [0.0 - 1.0]", registry=registry).set_function(
        lambda: psutil.cpu_percent() / 100
    )
    Gauge(
        "nv_cpu_memory_total_bytes", "CPU total memory (RAM), in bytes", registry=registry
    ).set_function(lambda: psutil.virtual_memory().total)
    Gauge(
        "nv_cpu_memory_used_bytes", "CPU used memory (RAM), in bytes", registry=registry
    ).set_function(lambda: psutil.virtual_memory().used)
    ProcessCollector(registry=registry)


class Metrics:
    """Everything the agent exports, in a registry of its own."""

    def __init__(
        self, manifest: Manifest, in_flight: Callable[[], int], insecure_hops: Sequence[str] = ()
    ):
        self.registry = r = CollectorRegistry()
        self.statistics = Statistics(manifest.family, str(manifest.version))
        r.register(_TritonSeries(self.statistics))
        _host_gauges(r)
        self._escalations = Counter(
            "edgecascade_escalations", "Inputs the policy sent towards the cloud", registry=r
        )
        self._degraded = Counter(
            "edgecascade_degraded",
            "Escalated inputs answered at the edge instead, by reason",
            ["reason"],
            registry=r,
        )
        for reason in DegradedReason:
            self._degraded.labels(reason.value)  # every reason exposed from the start, at 0
        self._latency = Histogram(
            "edgecascade_latency_seconds",
            "Time per hop: edge (decode+preprocess+edge model), "
            "cloud (the escalation round trip), total (the whole request in the agent)",
            ["hop"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        Gauge(
            "edgecascade_in_flight_requests", "Requests being answered now", registry=r
        ).set_function(in_flight)
        self._model = Info("edgecascade_model", "The model pair this agent serves", registry=r)
        self.serving(manifest)
        insecure = Gauge(
            "edgecascade_insecure",
            "1 for a hop that runs without TLS (--insecure: agent, its own port; "
            "--cloud-insecure: cloud, its calls to the cloud and ModelSync)",
            ["hop"],
            registry=r,
        )
        for hop in INSECURE_HOPS:
            insecure.labels(hop).set(hop in insecure_hops)
        self._update_failures = Counter(
            "edgecascade_update_failures",
            "Model updates not applied, by reason: watch (ModelSync unreachable or the family "
            "unknown), refused (manifest unsigned, altered, untrusted or invalid), download, "
            "activate (verify, compile or warm up)",
            ["reason"],
            registry=r,
        )
        for failure in UPDATE_FAILURES:
            self._update_failures.labels(failure)

    def serving(self, manifest: Manifest) -> None:
        """The pair now answering requests: its version's series start at 0."""
        self.statistics.serving(str(manifest.version))
        self._model.info(
            {
                "family": manifest.family,
                "version": str(manifest.version),
                "edge": manifest.edge.key,
                "cloud": manifest.cloud.key,
            }
        )

    def answered(self, answers: Answers, stamps: Stamps, executed: int | None = None) -> None:
        """One request answered (`answers`: one per input) by the pair it ran on; `executed`:
        the images of the execution it counts (0: another request of its batch counts it;
        None: one of its own)."""
        self.statistics.succeeded(str(answers.pair.version), len(answers), stamps, executed)
        self._latency.labels("total").observe((stamps.responded - stamps.received) / 1e9)
        observe_edge = self._latency.labels("edge").observe
        for _ in range(len(answers)):
            observe_edge(answers.edge_ms / 1e3)
        escalations = answers.escalations
        if escalations:
            self._escalations.inc(escalations)
            observe_cloud = self._latency.labels("cloud").observe
            for _ in range(escalations):
                observe_cloud(answers.cloud_ms / 1e3)
        reason = answers.degraded_reason
        if reason is not None and escalations:
            self._degraded.labels(reason.value).inc(escalations)

    def watch_audit(self, tracker: AgreementTracker) -> None:
        """Export the audit's agreement from `tracker`."""
        self.registry.register(_AuditSeries(tracker))

    def watch_uploads(self, uploader: ExampleUploader) -> None:
        """Export the example uploads' counts from `uploader`."""
        self.registry.register(_UploadSeries(uploader))

    def update_failed(self, reason: str) -> None:
        """A model update not applied, for one of UPDATE_FAILURES."""
        self._update_failures.labels(reason).inc()

    def failed(self, version: str, reason: str, ns: int) -> None:
        """One request of `version` refused or failed after `ns` nanoseconds, for one of
        Triton's reasons: REJECTED (overload), CANCELED, BACKEND (the model or the cascade
        failed) or OTHER (the request itself was wrong)."""
        self.statistics.failed(version, reason, ns)

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format, Triton's counters under Triton's names
        (prometheus_client writes a counter's HELP and TYPE as `<name>_total`)."""
        text = generate_latest(self.registry).decode()
        for name in TRITON_COUNTERS:
            for line in ("HELP", "TYPE"):
                text = text.replace(f"# {line} {name}_total ", f"# {line} {name} ")
        return text.encode()

    def app(self) -> Starlette:
        """An ASGI app that serves GET /metrics (and nothing else: 404)."""

        async def scrape(request: Request) -> Response:
            return Response(self.exposition(), media_type=CONTENT_TYPE_LATEST)

        return Starlette(routes=[Route("/metrics", scrape, methods=["GET"])])
