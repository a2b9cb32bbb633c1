"""The agent's Prometheus metrics, named as Triton names its own where there is a Triton
counterpart (nv_inference_*), edgecascade_* for the cascade's."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from edgecascade.cloud.common.manifest import Manifest
from edgecascade.router.cascade.cascade import Answers
from edgecascade.router.cascade.degraded import DegradedReason

# Triton's per-model counters, under Triton's exact names: prometheus_client would add `_total`
# to a counter's name, so they are collected here and exposed untyped.
TRITON_COUNTERS = {
    "nv_inference_request_success": "Number of successful inference requests, all batch sizes",
    "nv_inference_request_failure": "Number of failed inference requests, all batch sizes",
    "nv_inference_count": "Number of inferences performed (a batch of N counts N)",
    "nv_inference_request_duration_us": "Cumulative inference request duration in microseconds",
}
INSECURE_HOPS = ("agent", "cloud")
UPDATE_FAILURES = ("watch", "refused", "download", "activate")
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _TritonCounters(Collector):
    def __init__(self, labels: dict[str, str]):
        self._labels = labels
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)

    def inc(self, name: str, amount: float = 1.0, **extra_labels: str) -> None:
        self._values[name, tuple(sorted(extra_labels.items()))] += amount

    def collect(self) -> Iterator[Metric]:
        values = list(self._values.items())  # read from the HTTP thread while the loop writes
        for name, doc in TRITON_COUNTERS.items():
            metric = Metric(name, doc, "unknown")
            for (sample, extra), value in values:
                if sample == name:
                    metric.add_sample(name, {**self._labels, **dict(extra)}, value)
            yield metric


class Metrics:
    """Everything the agent exports, in a registry of its own."""

    def __init__(
        self, manifest: Manifest, in_flight: Callable[[], int], insecure_hops: Sequence[str] = ()
    ):
        self.registry = r = CollectorRegistry()
        self._triton = _TritonCounters({"model": manifest.family, "version": str(manifest.version)})
        r.register(self._triton)
        for name in (
            "nv_inference_request_success",
            "nv_inference_count",
            "nv_inference_request_duration_us",
        ):
            self._triton.inc(name, 0.0)  # exposed from the start, as Triton does
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
        """The pair now answering requests."""
        self._model.info(
            {
                "family": manifest.family,
                "version": str(manifest.version),
                "edge": manifest.edge.key,
                "cloud": manifest.cloud.key,
            }
        )

    def answered(self, answers: Answers, total_s: float) -> None:
        """One request answered (`answers`: one per input of its batch)."""
        self._triton.inc("nv_inference_request_success")
        self._triton.inc("nv_inference_count", len(answers))
        self._triton.inc("nv_inference_request_duration_us", total_s * 1e6)
        self._latency.labels("total").observe(total_s)
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

    def update_failed(self, reason: str) -> None:
        """A model update not applied, for one of UPDATE_FAILURES."""
        self._update_failures.labels(reason).inc()

    def failed(self, reason: str) -> None:
        """One request refused: REJECTED (overload), INVALID_ARGUMENT or OTHER."""
        self._triton.inc("nv_inference_request_failure", reason=reason)

    def serve_http(self, host: str, port: int) -> tuple[WSGIServer, Thread]:
        """/metrics over HTTP on a thread of its own; shut it down with `server.shutdown()`."""
        return start_http_server(port, host, self.registry)
