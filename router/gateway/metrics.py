"""The gateway's /metrics: HAProxy's own Prometheus exporter (per endpoint counters, health and
timings), then the gRPC calls it answered by method and status code.

HAProxy counts each answer in a stick table (`haproxy.GRPC_CODES`) under "method|grpc-status
header|HTTP status"; this reads the table through the runtime API at each scrape and gives it
as `grpc_server_handled_total{grpc_service, grpc_method, grpc_code}`, the counter and labels of
gRPC's Prometheus interceptors (go-grpc-prometheus, py-grpc-prometheus). A call whose answer has
no grpc-status header ended with its status in the trailers, which HAProxy does not read: such a
unary call got its message and counts as OK (Triton answers every failed unary call trailers-only);
a stream counts once, as it opens. Answers HAProxy makes itself for want of an endpoint (HTTP
503) are in its exporter's `haproxy_frontend_http_responses_total{code="5xx"}`.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path

import grpc
import h11
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edgecascade.router.gateway.haproxy import GRPC_CODES, OTHER_METHOD
from edgecascade.router.gateway.runtime import RuntimeApi

HANDLED = "grpc_server_handled"
LABELS = ("grpc_service", "grpc_method", "grpc_code")
# gRPC's mapping of an HTTP status to a gRPC code, for an answer without a gRPC status
# (grpc/doc/http-grpc-status-mapping.md); any other non-200 status is UNKNOWN.
FROM_HTTP = {
    400: grpc.StatusCode.INTERNAL,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.UNIMPLEMENTED,
    429: grpc.StatusCode.UNAVAILABLE,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.UNAVAILABLE,
}
_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
_ENTRY = re.compile(r"\skey=(\S*)\s.*\bgpc0=(\d+)")

Key = tuple[str, str, str]  # LABELS' values


def code_of(grpc_status: str, http_status: int) -> grpc.StatusCode:
    """The gRPC status of an answer from its grpc-status header ("" when none) and HTTP status."""
    if grpc_status:
        number = int(grpc_status) if grpc_status.isdigit() else -1
        return _BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)
    if http_status == 200:
        return grpc.StatusCode.OK
    return FROM_HTTP.get(http_status, grpc.StatusCode.UNKNOWN)


def labels_of(method: str) -> tuple[str, str]:
    """grpc_service and grpc_method of a path "/package.Service/Method" (or OTHER_METHOD)."""
    service, _, name = method.strip("/").rpartition("/")
    return (service, name) if service else (OTHER_METHOD, OTHER_METHOD)


def parse_table(text: str) -> Counter[Key]:
    """`show table GRPC_CODES` as counts by LABELS; lines that are not entries are skipped."""
    counts: Counter[Key] = Counter()
    for line in text.splitlines():
        found = _ENTRY.search(line)
        if found is None:
            continue
        method, grpc_status, http_status = (found.group(1).split("|") + ["", ""])[:3]
        code = code_of(grpc_status, int(http_status) if http_status.isdigit() else 0)
        counts[(*labels_of(method), code.name)] += int(found.group(2))
    return counts


class _Handled(Collector):
    def __init__(self, counts: Mapping[Key, int]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            HANDLED, "gRPC calls answered by the gateway, by method and status code", labels=LABELS
        )
        for key, count in sorted(self.counts.items()):
            family.add_metric(key, count)
        yield family


async def exporter_text(socket: Path) -> bytes:
    """What HAProxy's exporter answers GET /metrics on its unix socket `socket` (h11 reads the
    HTTP/1.1 answer, chunked as HAProxy sends it)."""
    connection = h11.Connection(h11.CLIENT)
    request = h11.Request(method="GET", target="/metrics", headers=[("Host", "gateway")])
    reader, writer = await asyncio.open_unix_connection(str(socket))
    body, status = [], 0
    try:
        writer.write(connection.send(request) + connection.send(h11.EndOfMessage()))
        await writer.drain()
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await reader.read(1 << 16))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
    finally:
        writer.close()
    if status != 200:
        raise RuntimeError(f"HAProxy's exporter answered HTTP {status}")
    return b"".join(body)


def metrics_app(api: RuntimeApi, exporter: Path) -> Starlette:
    """GET /metrics: HAProxy's exporter at `exporter`, then the answers counted in its
    GRPC_CODES table (read through `api`); any other path is 404."""

    async def metrics(request: Request) -> Response:
        text, table = await asyncio.gather(
            exporter_text(exporter), api.command(f"show table {GRPC_CODES}")
        )
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Handled(parse_table(table)))
        return Response(
            text.rstrip(b"\n") + b"\n" + generate_latest(registry), media_type=CONTENT_TYPE_LATEST
        )

    return Starlette(routes=[Route("/metrics", metrics)])
