"""OpenTelemetry traces, the same way in every tier.

A process exports spans over OTLP/HTTP only when it is given a collector (`--otlp-endpoint`, or
the standard OTEL_EXPORTER_OTLP_ENDPOINT variable); otherwise no span is made (not even the
API's no-op ones, about 9 us each here), and a caller's context is only passed on. W3C trace
context comes in with a request's gRPC metadata or HTTP headers (its spans then continue the
caller's trace) and goes out with calls to the cloud only when the current span is sampled, so
one sampling decision holds end to end (Triton traces every request that carries a context).
Spans can be turned off and on, and the sampled share changed, while the process runs (the
agent's KServe TraceSetting: edge/serving/tracesettings.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context, trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from edgecascade.cloud.common.errors import UserError

ENDPOINT_VARIABLE = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACES_PATH = "/v1/traces"  # appended to a base endpoint, as OTLP/HTTP exporters do
INSTALL_HINT = "pip install 'edgecascade[tracing]'"

_W3C = TraceContextTextMapPropagator()
_tracer = trace.get_tracer("edgecascade")  # follows the provider `configure` sets
_exporting = False  # whether `configure` set an exporting provider
_enabled = True  # whether spans are made while exporting (Triton's trace level, not OFF)
_ratio = 1.0  # the share of the traces started here that are sampled
_NO_SPAN = nullcontext(trace.INVALID_SPAN)


def check_endpoint(endpoint: str) -> str:
    """`endpoint` if it is an http(s)://host:port base URL; else a ValueError saying so."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(
            f"OTLP endpoint {endpoint!r} is not http(s)://HOST:PORT (the collector's OTLP/HTTP "
            f"base URL, e.g. http://127.0.0.1:4318; {TRACES_PATH} is added)"
        )
    return endpoint


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of a collector's base `endpoint`."""
    return endpoint.rstrip("/") + TRACES_PATH


def endpoint_of(option: str | None) -> str | None:
    """The collector to export to: `option`, else OTEL_EXPORTER_OTLP_ENDPOINT, else None."""
    endpoint = option or os.environ.get(ENDPOINT_VARIABLE) or None
    if endpoint is None:
        return None
    try:
        return check_endpoint(endpoint)
    except ValueError as e:
        raise UserError(str(e) if option else f"{ENDPOINT_VARIABLE}: {e}") from None


def provider(service: str, endpoint: str, ratio: float) -> trace.TracerProvider:
    """An SDK tracer provider for `service` that samples `ratio` of the traces started here
    (a caller's decision is kept) and exports them in batches to `endpoint`."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased
    except ImportError as e:
        raise UserError(
            f"exporting traces needs the OpenTelemetry SDK ({e}): {INSTALL_HINT}"
        ) from None

    class Adjustable(Sampler):
        """TraceIdRatioBased at the ratio `set_ratio` sets while the process runs."""

        def __init__(self) -> None:
            self.inner = TraceIdRatioBased(_ratio)

        def should_sample(self, *args: Any, **kwargs: Any) -> Any:
            if self.inner.rate != _ratio:
                self.inner = TraceIdRatioBased(_ratio)
            return self.inner.should_sample(*args, **kwargs)

        def get_description(self) -> str:
            return f"Adjustable{{{self.inner.get_description()}}}"

    set_ratio(ratio)
    sdk = TracerProvider(
        sampler=ParentBased(Adjustable()), resource=Resource.create({SERVICE_NAME: service})
    )
    sdk.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url(endpoint))))
    return sdk


def configure(service: str, endpoint: str | None, ratio: float = 1.0) -> str | None:
    """Export this process's spans as `service` to `endpoint` (or OTEL_EXPORTER_OTLP_ENDPOINT);
    the collector used, or None: no exporter, no spans. Once per process."""
    global _exporting
    collector = endpoint_of(endpoint)
    if collector is not None:
        trace.set_tracer_provider(provider(service, collector, ratio))
        _exporting = True
    return collector


def making_spans() -> bool:
    """Whether this process makes spans now: it exports them and they are not turned off."""
    return _exporting and _enabled


def exporting() -> bool:
    """Whether `configure` found a collector to export spans to."""
    return _exporting


def set_enabled(enabled: bool) -> None:
    """Turn the spans of an exporting process off (a caller's context is then only passed
    on, as without a collector) or back on."""
    global _enabled
    _enabled = enabled


def ratio() -> float:
    """The share of the traces started here that are sampled."""
    return _ratio


def set_ratio(ratio: float) -> None:
    """Sample `ratio` (0 to 1) of the traces started from now on (a caller's decision is kept)."""
    global _ratio
    if not 0 <= ratio <= 1:
        raise ValueError(f"a sampling ratio is between 0 and 1, got {ratio}")
    _ratio = ratio


def span(name: str, **attributes: AttributeValue) -> AbstractContextManager[trace.Span]:
    """A child span of the current one, current inside the block (a non-recording stand-in
    when no span is made)."""
    if not making_spans():
        return _NO_SPAN
    return _tracer.start_as_current_span(name, attributes=attributes)


def server_span(name: str, carrier: Mapping[str, str]) -> AbstractContextManager[trace.Span]:
    """The span of one request received, continuing the trace context in `carrier` (the
    request's metadata or headers, keys in lower case) when it has one; when nothing is
    exported, that context is only made current, for the calls the request makes."""
    if making_spans():
        parent = _W3C.extract(carrier)
        return _tracer.start_as_current_span(name, parent, kind=trace.SpanKind.SERVER)
    return _passed_on(carrier) if "traceparent" in carrier else _NO_SPAN


@contextmanager
def _passed_on(carrier: Mapping[str, str]) -> Iterator[trace.Span]:
    token = context.attach(_W3C.extract(carrier))
    try:
        yield trace.get_current_span()
    finally:
        context.detach(token)


def outgoing_headers() -> dict[str, str]:
    """The W3C trace context (traceparent, tracestate) to send with a call made now; empty
    outside a sampled span."""
    if not trace.get_current_span().get_span_context().trace_flags.sampled:
        return {}
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the current span, or None outside one."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)
