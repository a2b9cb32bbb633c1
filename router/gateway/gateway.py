"""The router gateway: KServe v2 gRPC in front of one or more Triton endpoints.

Edges call it exactly as they would call Triton. HAProxy carries the requests (`haproxy.py`:
per-request balancing over HTTP/2, retry on another endpoint when one is gone); this process runs
it, answers its health agent with each endpoint's Triton readiness, and serves ModelSync when it
has a registry.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

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
from edgecascade.router.gateway.haproxy import (
    BackendTls,
    CallerMaps,
    FrontendTls,
    GatewayConfig,
    HAProxy,
)
from edgecascade.router.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

AGENT_TIMEOUT_S = 0.8  # within HAProxy's check timeout (CHECK_TIMEOUT_S)


class HealthAgent:
    """HAProxy's agent check: HAProxy sends an endpoint's server name, the agent asks that
    Triton ServerReady (over `transport`: the gateway's TLS to Triton) and answers `up` or
    `down` (connect failures are HAProxy's own check)."""

    def __init__(
        self, upstreams: Sequence[str], timeout_s: float, transport: Transport = PLAINTEXT
    ):
        self.timeout_s = timeout_s
        self._channels = {
            GatewayConfig.server_name(i): transport.aio_channel(url, options=FAST_RECONNECT)
            for i, url in enumerate(upstreams)
        }
        self._ready: dict[str, bool] = {}
        self._urls = dict(zip(self._channels, upstreams))

    async def ready(self, name: str) -> bool:
        """Whether the endpoint HAProxy calls `name` is ready; logs every change."""
        stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channels[name])
        try:
            reply = await stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=self.timeout_s)
            ready = bool(reply.ready)
        except grpc.aio.AioRpcError:
            ready = False
        if self._ready.get(name) != ready:
            log.warning("Triton %s is %s", self._urls[name], "ready" if ready else "NOT ready")
            self._ready[name] = ready
        return ready

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            name = (await reader.readline()).decode(errors="replace").strip()
            if name in self._channels:
                writer.write(b"up\n" if await self.ready(name) else b"down\n")
                await writer.drain()
        except ConnectionError:
            log.debug("HAProxy left before the agent answered")  # its check timed out
        finally:
            writer.close()

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self._channels.values()))


async def serve(settings: GatewaySettings, stop: asyncio.Event | None = None) -> None:
    """Run the gateway until `stop` is set (or forever, or until HAProxy exits); in-flight
    calls get `grace_s`. With a `registry`, edges can also sync their models here (ModelSync);
    with a `metrics_port`, Prometheus scrapes http://host:metrics_port/metrics."""
    host, port, urls = settings.host, settings.port, settings.upstream
    if port and not port_is_free(port, host):
        raise PortInUse(f"cannot listen on {host}:{port}: the port is in use")
    try:  # every file is read and checked before anything starts
        callers = Callers.load(settings.callers) if settings.callers else None
        frontend, upstream = _frontend_tls(settings), _upstream_tls(settings)
        for tls in (frontend, upstream):
            if tls is not None:
                tls.channel_credentials()  # reads the files, checks the key is the cert's
    except (AuthError, TlsError) as e:
        raise UserError(str(e)) from None
    admin_key = (
        read_admin_key(settings.triton_admin_key_file) if settings.triton_admin_key_file else None
    )
    agent = HealthAgent(urls, timeout_s=AGENT_TIMEOUT_S, transport=Transport(tls=upstream))
    agent_server = await asyncio.start_server(agent.answer, "127.0.0.1", 0)
    sync_server = None
    sync_url = None
    # Only HAProxy calls it; with callers, ModelSync checks each call's token itself.
    sync = Transport(server_interceptors=(Authorizer(callers),) if callers else ())
    with tempfile.TemporaryDirectory(prefix="edgecascade-gateway-") as tmp:
        folder = Path(tmp)  # 0700: it holds keys, caller maps and the admin key
        if settings.registry is not None:
            sync_server = sync.server()
            add_model_sync(sync_server, Registry(settings.registry))
            sync_url = f"127.0.0.1:{sync.listen(sync_server, '127.0.0.1:0')}"
            await sync_server.start()
        config = GatewayConfig(
            upstreams=urls,
            listen=f"{host}:{port or free_port(host)}",
            agent_port=agent_server.sockets[0].getsockname()[1],
            check_interval_s=settings.probe_interval_s,
            model_sync=sync_url,
            metrics=f"{host}:{settings.metrics_port}" if settings.metrics_port else None,
            grace_s=settings.grace_s,
            tls=_frontend_config(frontend, folder),
            upstream_tls=_backend_config(upstream, folder),
            callers=CallerMaps.write(callers, folder) if callers else None,
            admin_key=admin_key,
        )
        if callers and config.tls is None:
            log.warning("callers are checked but edges call in plaintext: tokens can be read")
        config_path = folder / "haproxy.cfg"
        config_path.touch(mode=0o600)
        config_path.write_text(config.render())
        haproxy = HAProxy(config_path, config.listen)
        try:
            await haproxy.start()
            log.info("router gateway on %s -> %s", config.listen, ", ".join(urls))
            stopped = asyncio.ensure_future((stop or asyncio.Event()).wait())
            exited = asyncio.ensure_future(haproxy.exited())
            await asyncio.wait([stopped, exited], return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if exited.done():
                raise RuntimeError(f"HAProxy exited with status {exited.result()} (see above)")
        finally:
            await haproxy.stop(settings.grace_s)
            agent_server.close()
            if sync_server is not None:
                await sync_server.stop(grace=settings.grace_s)
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
