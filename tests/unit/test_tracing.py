"""Tracing without servers: endpoints, W3C trace context in and out, spans as the edge makes
them (an SDK provider with an in-memory exporter stands in for the OTLP export)."""

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from edgecascade.cloud.common import tracing
from edgecascade.cloud.common.errors import UserError

CALLER_TRACE, CALLER_SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:4318", "https://collector.example:4318/"])
def test_a_collector_is_its_base_url_and_traces_go_to_v1_traces(endpoint: str):
    assert tracing.check_endpoint(endpoint) == endpoint
    assert tracing.traces_url(endpoint).endswith(":4318/v1/traces")


@pytest.mark.parametrize(
    "endpoint", ["127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces", "grpc://127.0.0.1:4317"]
)
def test_an_endpoint_that_is_not_a_base_url_is_refused(endpoint: str):
    with pytest.raises(ValueError, match="is not http\\(s\\)://HOST:PORT"):
        tracing.check_endpoint(endpoint)


def test_the_option_wins_over_the_standard_variable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(tracing.ENDPOINT_VARIABLE, "http://from-env:4318")
    assert tracing.endpoint_of("http://option:4318") == "http://option:4318"
    assert tracing.endpoint_of(None) == "http://from-env:4318"
    monkeypatch.setenv(tracing.ENDPOINT_VARIABLE, "from-env:4318")
    with pytest.raises(UserError, match=tracing.ENDPOINT_VARIABLE):
        tracing.endpoint_of(None)
    monkeypatch.delenv(tracing.ENDPOINT_VARIABLE)
    assert tracing.endpoint_of(None) is None


def test_without_a_collector_nothing_is_configured(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(tracing.ENDPOINT_VARIABLE, raising=False)
    assert tracing.configure("edgecascade-edge", None) is None
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)


def test_the_provider_samples_the_ratio_for_the_service():
    provider = tracing.provider("edgecascade-edge", "http://127.0.0.1:4318", 0.25)
    try:
        assert provider.resource.attributes["service.name"] == "edgecascade-edge"
        assert "TraceIdRatioBased{0.25}" in provider.sampler.get_description()
        assert provider.sampler.get_description().startswith("ParentBased")
    finally:
        provider.shutdown()


def test_a_request_span_continues_the_callers_trace(exported: InMemorySpanExporter):
    with tracing.server_span("Classify", {"traceparent": TRACEPARENT}):
        with tracing.span("cloud_call", images=2):
            headers = tracing.outgoing_headers()
            ids = tracing.current_ids()
    cloud_call, request = exported.get_finished_spans()
    assert request.kind == trace.SpanKind.SERVER
    assert f"{request.context.trace_id:032x}" == CALLER_TRACE
    assert f"{request.parent.span_id:016x}" == CALLER_SPAN
    assert cloud_call.parent.span_id == request.context.span_id
    assert cloud_call.attributes["images"] == 2
    span_id = f"{cloud_call.context.span_id:016x}"
    assert headers == {"traceparent": f"00-{CALLER_TRACE}-{span_id}-01"}
    assert ids == (CALLER_TRACE, span_id)


def test_a_request_without_context_starts_a_trace(exported: InMemorySpanExporter):
    with tracing.server_span("ModelInfer", {"authorization": "Bearer x"}):
        pass
    (request,) = exported.get_finished_spans()
    assert request.parent is None


def test_nothing_goes_out_outside_a_span_or_from_an_unsampled_one(monkeypatch):
    assert tracing.outgoing_headers() == {} and tracing.current_ids() is None
    monkeypatch.setattr(tracing, "_tracer", TracerProvider(ALWAYS_OFF).get_tracer("test"))
    monkeypatch.setattr(tracing, "_exporting", True)
    with tracing.server_span("Classify", {}):
        assert tracing.outgoing_headers() == {}


def test_without_export_a_callers_context_passes_through():
    """Nothing configured: no spans of our own, but the caller's trace reaches the cloud."""
    with tracing.server_span("Classify", {"traceparent": TRACEPARENT}):
        with tracing.span("cloud_call") as span:
            span.set_attribute("images", 1)  # a no-op
            assert tracing.outgoing_headers() == {"traceparent": TRACEPARENT}
    assert tracing.outgoing_headers() == {}
    with tracing.server_span("Classify", {}), tracing.span("cloud_call"):
        assert tracing.outgoing_headers() == {} and tracing.current_ids() is None
