"""The router gateway: KServe v2 gRPC in front of one or more Triton endpoints.

Edges call it exactly as they would call Triton. HAProxy carries the requests (`haproxy.py`:
per-request balancing over HTTP/2, retry on another endpoint when one is gone); this process runs
it, answers its health agent with each endpoint's Triton readiness, answers gRPC health itself
(SERVING while at least one Triton is ready), follows the endpoints that join and leave
(`discovery.py`), serves ModelSync when it has a registry, KServe v2 over HTTP/REST
(`rest.py`) and /metrics (`metrics.py`) when given their ports.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from tritonclient.grpc import service_pb2, service_pb2_grpc

from edgecascade.cloud.common import asgi, kserve_rest
from edgecascade.cloud.common.auth import AuthError, Authorizer, Callers
from edgecascade.cloud.common.errors import UserError
from edgecascade.cloud.common.ports import free_port, port_is_free
from edgecascade.cloud.common.transport import (
    FAST_RECONNECT,
    PLAINTEXT,
    PortInUse,
    Tls,
    TlsError,
    Transport,
)
from edgecascade.cloud.registry.model_sync import add_model_sync
from edgecascade.cloud.registry.store import Registry
from edgecascade.cloud.triton.server import read_admin_key
from edgecascade.router.gateway.discovery import (
    Membership,
    Source,
    SrvRecords,
    UpstreamsFile,
    follow,
    read_upstreams,
)
from edgecascade.router.gateway.haproxy import (
    STREAMS,
    TRITON,
    BackendTls,
    CallerMaps,
    FrontendTls,
    GatewayConfig,
    HAProxy,
)
from edgecascade.router.gateway.metrics import metrics_app
from edgecascade.router.gateway.rest import Forwarder
from edgecascade.router.gateway.runtime import RuntimeApi
from edgecascade.router.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

AGENT_TIMEOUT_S = 0.8  # within HAProxy's check timeout (CHECK_TIMEOUT_S)
REST_MAX_BODY_BYTES = 64 << 20  # the largest REST request body (413 past it)
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthAgent:
    """HAProxy's agent check: HAProxy sends an endpoint's server name, the agent asks that
    Triton ServerReady (over `transport`: the gateway's TLS to Triton) and answers `up` or
    `down` (connect failures are HAProxy's own check). `health` (gRPC health, which the
    gateway's readiness probes ask) is SERVING while at least one endpoint is ready."""

    def __init__(
        self,
        upstreams: Sequence[str],
        timeout_s: float,
        transport: Transport = PLAINTEXT,
        health: health_aio.HealthServicer | None = None,
    ):
        self.timeout_s, self.transport, self.health = timeout_s, transport, health
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._urls: dict[str, str] = {}
        self._ready: dict[str, bool] = {}
        for i, url in enumerate(upstreams):
            self.watch(GatewayConfig.server_name(i), url)

    def watch(self, name: str, url: str) -> None:
        """Answer for the endpoint `url` that HAProxy calls `name` (not ready until asked)."""
        self._channels[name] = self.transport.aio_channel(url, options=FAST_RECONNECT)
        self._urls[name] = url

    async def forget(self, name: str) -> None:
        """Stop answering for `name` (an endpoint that left)."""
        self._urls.pop(name)
        self._ready.pop(name, None)
        await self._channels.pop(name).close()
        await self.publish()

    async def ready(self, name: str) -> bool:
        """Whether the endpoint HAProxy calls `name` is ready; logs every change."""
        stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channels[name])
        why = ""
        try:
            reply = await stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=self.timeout_s)
            ready = bool(reply.ready)
        except grpc.aio.AioRpcError as e:
            ready, why = False, f" ({e.code().name}: {e.details()})"
        if name in self._urls and self._ready.get(name) != ready:
            log.log(
                logging.INFO if ready else logging.WARNING,
                "Triton %s is %s%s",
                self._urls[name],
                "ready" if ready else "NOT ready",
                why,
            )
            self._ready[name] = ready
            await self.publish()
        return ready

    async def publish(self) -> None:
        """Set `health`: SERVING while at least one endpoint is ready."""
        if self.health is not None:
            serving = any(self._ready.values())
            status = health_pb2.HealthCheckResponse.SERVING if serving else NOT_SERVING
            await self.health.set("", status)

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:  # HAProxy sends the name and waits: one read, no line end needed
            name = (await reader.read(256)).decode(errors="replace").strip()
            if name in self._channels:
                writer.write(b"up\n" if await self.ready(name) else b"down\n")
                await writer.drain()
        except ConnectionError:
            log.debug("HAProxy left before the agent answered")  # its check timed out
        finally:
            writer.close()

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self._channels.values()))


def _sources(settings: GatewaySettings) -> list[Source]:
    """Where the gateway learns of endpoints beyond its fixed upstreams."""
    sources: list[Source] = []
    if settings.upstreams_file is not None:
        sources.append(UpstreamsFile(settings.upstreams_file))
    if settings.discover is not None:
        sources.append(SrvRecords(settings.discover, settings.dns_server))
    return sources


async def serve(settings: GatewaySettings, stop: asyncio.Event | None = None) -> None:
    """Run the gateway until `stop` is set (or forever, or until HAProxy exits); in-flight
    calls get `grace_s`. With a `registry`, edges can also sync their models here (ModelSync);
    with a `metrics_port`, Prometheus scrapes http://host:metrics_port/metrics; with an
    upstreams file or a DNS name to discover, endpoints join and leave while it runs; with an
    `http_port`, it serves KServe v2 over HTTP/REST there."""
    host, port, urls = settings.host, settings.port, settings.upstream
    for taken in (port, settings.health_port, settings.http_port, settings.metrics_port):
        if taken and not port_is_free(taken, host):
            raise PortInUse(f"cannot listen on {host}:{taken}: the port is in use")
    try:  # every file is read and checked before anything starts
        callers = Callers.load(settings.callers) if settings.callers else None
        frontend, upstream = _frontend_tls(settings), _upstream_tls(settings)
        for tls in (frontend, upstream):
            if tls is not None:
                tls.channel_credentials()  # reads the files, checks the key is the cert's
    except (AuthError, TlsError) as e:
        raise UserError(str(e)) from None
    if settings.upstreams_file is not None:
        try:
            read_upstreams(settings.upstreams_file)  # a bad line is a UserError naming it
        except OSError as e:
            raise UserError(
                f"cannot read the upstreams file {settings.upstreams_file}: {e.strerror} "
                "(`edgecascade router upstreams add HOST:PORT --file FILE` creates it)"
            ) from None
    admin_key = (
        read_admin_key(settings.triton_admin_key_file) if settings.triton_admin_key_file else None
    )
    health = health_aio.HealthServicer()
    agent = HealthAgent(urls, AGENT_TIMEOUT_S, Transport(tls=upstream), health)
    # Health says from the start whether a configured Triton is ready; HAProxy asks on.
    await asyncio.gather(*(agent.ready(GatewayConfig.server_name(i)) for i in range(len(urls))))
    await agent.publish()  # NOT_SERVING until a Triton is found ready
    agent_server = await asyncio.start_server(agent.answer, "127.0.0.1", 0)
    # The gateway's own gRPC server, which HAProxy routes health and ModelSync to (with
    # callers, ModelSync checks each call's token); the probes' plaintext port has health only.
    own = Transport(server_interceptors=(Authorizer(callers),) if callers else ())
    own_server = own.server()
    health_pb2_grpc.add_HealthServicer_to_server(health, own_server)
    own_url = f"127.0.0.1:{own.listen(own_server, '127.0.0.1:0')}"
    if settings.registry is not None:
        add_model_sync(
            own_server,
            Registry(settings.registry),
            examples_quota_bytes=settings.examples_quota_bytes,
        )
    await own_server.start()
    probe_server = None
    if settings.health_port:
        probe_server = PLAINTEXT.server()
        health_pb2_grpc.add_HealthServicer_to_server(health, probe_server)
        PLAINTEXT.listen(probe_server, f"{host}:{settings.health_port}")
        await probe_server.start()
    following: asyncio.Future[None] | None = None
    with tempfile.TemporaryDirectory(prefix="edgecascade-gateway-") as tmp:
        folder = Path(tmp)  # 0700: it holds keys, caller maps and the admin key
        sources = _sources(settings)
        config = GatewayConfig(
            upstreams=urls,
            listen=f"{host}:{port or free_port(host)}",
            agent_port=agent_server.sockets[0].getsockname()[1],
            check_interval_s=settings.probe_interval_s,
            model_sync=own_url if settings.registry is not None else None,
            metrics=f"unix@{folder / 'exporter.sock'}" if settings.metrics_port else None,
            grace_s=settings.grace_s,
            tls=_frontend_config(frontend, folder),
            upstream_tls=_backend_config(upstream, folder),
            callers=CallerMaps.write(callers, folder) if callers else None,
            admin_key=admin_key,
            health=own_url,
            admin_socket=folder / "admin.sock" if sources or settings.metrics_port else None,
            access_log=settings.access_log,
            log_format=settings.log_format,
            rest_socket=folder / "rest.sock" if settings.http_port else None,
            count_codes=bool(settings.metrics_port),
        )
        if callers and config.tls is None:
            log.warning("callers are checked but edges call in plaintext: tokens can be read")
        config_path = folder / "haproxy.cfg"
        config_path.touch(mode=0o600)
        config_path.write_text(config.render())
        haproxy = HAProxy(config_path, config.listen)
        faces: list[asgi.HttpServer] = []
        forwarder = None
        try:
            # The HTTP faces listen before HAProxy does: a gateway that answers gRPC has them.
            if config.metrics is not None and config.admin_socket is not None:
                app = metrics_app(RuntimeApi(config.admin_socket), folder / "exporter.sock")
                faces.append(await asgi.start(app, host, settings.metrics_port))
            if config.rest_socket is not None:
                forwarder = Forwarder(config.rest_socket)
                rest = kserve_rest.rest_app(
                    forwarder, REST_MAX_BODY_BYTES, Authorizer(callers) if callers else None
                )
                faces.append(
                    await asgi.start(rest, host, settings.http_port, frontend, settings.grace_s)
                )
                log.info("KServe v2 HTTP/REST on %s:%d", host, faces[-1].port)
            await haproxy.start()
            log.info("router gateway on %s -> %s", config.listen, ", ".join(urls) or "discovered")
            if sources:
                assert config.admin_socket is not None
                membership = Membership(
                    RuntimeApi(config.admin_socket),
                    lambda backend, name, address: config.servers(backend, name, address, False),
                    agent,
                    (TRITON, STREAMS),
                    settings.grace_s,
                )
                following = asyncio.ensure_future(
                    follow(sources, membership, settings.probe_interval_s, urls)
                )
            stopped = asyncio.ensure_future((stop or asyncio.Event()).wait())
            exited = asyncio.ensure_future(haproxy.exited())
            await asyncio.wait([stopped, exited], return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if exited.done():
                raise RuntimeError(f"HAProxy exited with status {exited.result()} (see above)")
        finally:
            if following is not None:
                following.cancel()
            await asyncio.gather(*(face.close() for face in faces))
            if forwarder is not None:
                await forwarder.close()
            await haproxy.stop(settings.grace_s)
            agent_server.close()
            await own_server.stop(grace=settings.grace_s)
            if probe_server is not None:
                await probe_server.stop(grace=None)
            await agent.close()


def _upstream_tls(settings: GatewaySettings) -> Tls | None:
    if settings.triton_ca is None:
        return None
    return Tls(
        ca=settings.triton_ca,
        cert=settings.triton_cert,
        key=settings.triton_key,
        server_name=settings.triton_server_name,
    )


def _pem(tls: Tls, path: Path) -> Path:
    """`tls`'s certificate chain then its key in one file, as HAProxy reads them (0600)."""
    assert tls.cert is not None and tls.key is not None
    chain, key = Path(tls.cert).read_bytes(), Path(tls.key).read_bytes()
    path.touch(mode=0o600)
    path.write_bytes(chain.rstrip(b"\n") + b"\n" + key)
    return path


def _frontend_tls(settings: GatewaySettings) -> Tls | None:
    if settings.tls_cert is None:
        return None
    return Tls(settings.tls_ca, settings.tls_cert, settings.tls_key, settings.require_client_cert)


def _frontend_config(tls: Tls | None, folder: Path) -> FrontendTls | None:
    if tls is None:
        return None
    return FrontendTls(_pem(tls, folder / "gateway.pem"), tls.ca, tls.require_client_cert)


def _backend_config(tls: Tls | None, folder: Path) -> BackendTls | None:
    if tls is None:
        return None
    assert tls.ca is not None  # _upstream_tls sets it
    pem = _pem(tls, folder / "triton-client.pem") if tls.cert else None
    return BackendTls(tls.ca, pem, tls.server_name)
