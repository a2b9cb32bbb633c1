"""An ASGI app on uvicorn in the running event loop: TLS whose renewed certificates need no
restart, the verified client certificate's common name in each request's state (COMMON_NAME),
and a port held by another program reported as PortInUse. The KServe v2 REST faces and the
/metrics ports are served this way."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from edgecascade.cloud.common.transport import PortInUse, Tls

log = logging.getLogger(__name__)

COMMON_NAME = "x509_common_name"  # the request state's key of a client certificate's name


class _PeerCertificate(H11Protocol):
    """uvicorn's HTTP/1.1 protocol that puts the common name of a verified client certificate
    into every request's `state` (scope["state"] is a copy of app_state per request)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        certificate = ssl_object.getpeercert() if ssl_object is not None else None
        names = [
            value
            for entry in (certificate or {}).get("subject", ())
            for key, value in entry
            if key == "commonName"
        ]
        if names:
            self.app_state = {**self.app_state, COMMON_NAME: names[0]}


class _Certificates:
    """The TLS context of a REST port from `tls` (mutual TLS when it requires client
    certificates), made anew for the next handshake once its files changed, as the gRPC
    port's are (transport.Tls): renewed certificates need no restart. A change that does not
    load keeps the current context, logged once."""

    def __init__(self, tls: Tls):
        self._tls = tls
        self._stamp = self._stamps()
        self._failed: object = None
        self.current = self._context()

    def _stamps(self) -> tuple[tuple[int, int, int], ...]:
        stats = [path.stat() for path in self._tls.files()]
        return tuple((s.st_mtime_ns, s.st_size, s.st_ino) for s in stats)

    def _context(self) -> ssl.SSLContext:
        tls = self._tls
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls.cert), str(tls.key))
        if tls.ca is not None:
            context.load_verify_locations(str(tls.ca))
        context.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_NONE
        context.sni_callback = self._handshake  # called for every handshake, SNI or not
        return context

    def _handshake(self, connection: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        try:
            stamp = self._stamps()
        except OSError:
            stamp = self._stamp  # a file is being replaced: keep the current context
        if stamp != self._stamp and stamp != self._failed:
            try:
                self.current, self._stamp = self._context(), stamp
                log.info("TLS certificate %s reloaded (REST)", self._tls.cert)
            except (OSError, ssl.SSLError) as e:
                log.warning("keeping the current TLS certificate (REST): %s", e)
                self._failed = stamp
        if connection.context is not self.current:
            connection.context = self.current


class _Server(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the agent handles SIGINT and SIGTERM itself (cloud.common.serving)


@dataclass
class HttpServer:
    """An ASGI app served by uvicorn in the running event loop; `close` stops it."""

    server: _Server
    task: asyncio.Task[None]
    port: int

    async def close(self) -> None:
        self.server.should_exit = True
        await self.task


def _listening(host: str, port: int, shared: bool = False) -> socket.socket:
    """A listening TCP socket on host:port (with SO_REUSEPORT when `shared`: for worker
    processes whose parent holds the port). Its protocol is named (IPPROTO_TCP), as asyncio
    needs to set TCP_NODELAY on the connections it accepts: without it a response written in
    two parts (head, then body) waits for the client's delayed ACK, 40 ms."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, int(shared))
        sock.bind(address)
        sock.listen()
    except OSError:
        sock.close()
        raise
    return sock


async def start(
    app: ASGIApp,
    host: str,
    port: int,
    tls: Tls | None = None,
    grace_s: float | None = None,
    shared: bool = False,
) -> HttpServer:
    """Serve `app` on host:port (0: a free port), over `tls` when given (mutual TLS when it
    requires client certificates); PortInUse when the port is taken (`shared`: with the other
    worker processes whose parent holds it). Closed, it gives the requests in flight `grace_s`
    seconds (None: as long as they take)."""
    certificates = None
    if tls is not None:
        tls.server_credentials()  # every file read and checked, as on the gRPC port
        certificates = _Certificates(tls)
    try:
        sock = _listening(host.strip("[]"), port, shared)
    except OSError as e:
        raise PortInUse(f"cannot listen on {host}:{port}: {e.strerror}") from e
    config = uvicorn.Config(
        app,
        http=_PeerCertificate,
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=None if grace_s is None else max(1, round(grace_s)),
    )
    config.load()
    if certificates is not None:
        config.ssl = certificates.current  # the first context; each handshake picks the newest
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()  # raises what stopped it
            raise RuntimeError(f"the HTTP server on {host}:{port} stopped at start")
        await asyncio.sleep(0.01)
    return HttpServer(server, task, sock.getsockname()[1])
