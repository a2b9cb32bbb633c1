"""One place where every gRPC server, channel and tritonclient client of the project is built.

Address, credentials (plaintext, TLS or mutual TLS), interceptors, message limits, keepalive and
per-call metadata are decided here once, so that TLS, tokens or tracing land in this module only.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from edgecascade.cloud.common.errors import UserError

log = logging.getLogger(__name__)

# Images can be large: Triton's own message limits.
MAX_MESSAGE_BYTES = 2**31 - 1

ChannelOptions = Sequence[tuple[str, Any]]

# A server that comes back is reconnected to within a second (gRPC's default backoff grows to
# 2 minutes): backoff at most 500 ms, plus gRPC's 20% jitter and the connect (with 1000 ms, a
# gateway that reset every connection for 3 s was used again 1.15 s after it took them again).
FAST_RECONNECT: ChannelOptions = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
)


class PortInUse(UserError, OSError):
    """The address a server was told to listen on is taken by another program."""


class TlsError(UserError, ValueError):
    """TLS settings that cannot work: a file missing or unreadable, a key that is not the
    certificate's; the message names the file."""


@dataclass(frozen=True)
class Tls:
    """TLS for one side of a connection.

    A server needs `cert` and `key`; with `require_client_cert` it asks every client for a
    certificate signed by `ca` (mutual TLS). A client verifies the server against `ca` (the
    system's roots when None), shows `cert`/`key` when given (for mutual TLS) and checks the
    server's certificate for `server_name` instead of the address's host when given.
    A server rereads its files when they change, so renewed certificates need no restart.
    """

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    require_client_cert: bool = False
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise TlsError("TLS needs a certificate and its key together (one was given)")
        if self.require_client_cert and self.ca is None:
            raise TlsError("requiring client certificates needs the CA that signs them")

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Client credentials, read from the files now."""
        pair = self._pair()
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca, "CA") if self.ca else None,
            private_key=pair[0] if pair else None,
            certificate_chain=pair[1] if pair else None,
        )

    def server_credentials(self) -> grpc.ServerCredentials:
        """Server credentials that reread the files on a new connection once they changed."""
        if self.cert is None:
            raise TlsError("a TLS server needs a certificate and its key")
        fetcher = _ReloadingCertificates(self)
        return grpc.dynamic_ssl_server_credentials(
            fetcher.initial, fetcher, require_client_authentication=self.require_client_cert
        )

    def files(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.ca, self.cert, self.key) if p is not None)

    def _pair(self) -> tuple[bytes, bytes] | None:
        """(key, certificate chain) as PEM, checked to belong together."""
        if self.cert is None or self.key is None:
            return None
        key, chain = _read(self.key, "key"), _read(self.cert, "certificate")
        try:
            cert_public = x509.load_pem_x509_certificate(chain).public_key()
            key_public = serialization.load_pem_private_key(key, password=None).public_key()
        except (ValueError, TypeError) as e:
            raise TlsError(f"TLS certificate {self.cert} or key {self.key} is not PEM ({e})") from e
        if _spki(cert_public) != _spki(key_public):
            raise TlsError(f"TLS key {self.key} is not the key of certificate {self.cert}")
        return key, chain

    def _server_configuration(self) -> grpc.ServerCertificateConfiguration:
        pair = self._pair()
        assert pair is not None  # server_credentials checked that cert and key are given
        return grpc.ssl_server_certificate_configuration(
            [pair], root_certificates=_read(self.ca, "CA") if self.ca else None
        )


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise TlsError(f"TLS {what} {path} cannot be read: {e.strerror}") from e


def _spki(public_key: Any) -> bytes:
    return bytes(
        public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


class _ReloadingCertificates:
    """gRPC's certificate-configuration fetcher, called before every new connection's
    handshake: a new configuration once a file changed (mtime, size or inode), else None.

    A change that does not load (a key replaced before its certificate) keeps the current
    configuration and is retried on the next connection, logged once per change.
    """

    def __init__(self, tls: Tls):
        self._tls = tls
        self._lock = threading.Lock()
        self.initial = tls._server_configuration()  # a missing or bad file is a TlsError
        self._stamp = self._stamps()
        self._failed: tuple[tuple[int, int, int], ...] | None = None

    def _stamps(self) -> tuple[tuple[int, int, int], ...]:
        stats = [path.stat() for path in self._tls.files()]
        return tuple((s.st_mtime_ns, s.st_size, s.st_ino) for s in stats)

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            try:
                stamp = self._stamps()
            except OSError:
                return None  # a file is being replaced: keep the current configuration
            if stamp == self._stamp:
                return None
            try:
                configuration = self._tls._server_configuration()
            except TlsError as e:
                if stamp != self._failed:
                    log.warning("keeping the current TLS certificate: %s", e)
                    self._failed = stamp
                return None
            self._stamp = stamp
            log.info("TLS certificate %s reloaded", self._tls.cert)
            return configuration


def message_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]


def retry_options(service: str, method: str, attempts: int = 2) -> list[tuple[str, Any]]:
    """gRPC's own retry policy: `method` answered UNAVAILABLE is sent again, within the
    caller's deadline (for idempotent calls such as an inference)."""
    policy = {
        "methodConfig": [
            {
                "name": [{"service": service, "method": method}],
                "retryPolicy": {
                    "maxAttempts": attempts,
                    "initialBackoff": "0.01s",
                    "maxBackoff": "0.05s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
    return [("grpc.enable_retries", 1), ("grpc.service_config", json.dumps(policy))]


@dataclass(frozen=True)
class Transport:
    """How this process speaks gRPC, on the server and the client side.

    `metadata` is sent with every call of every channel built here (for example a token);
    `keepalive_time_ms` pings idle connections so that dead peers are noticed; `tls` secures
    the ports `listen` opens and the channels and clients built here (plaintext when None). A
    process that serves and calls with different certificates uses one Transport per side.
    """

    max_message_bytes: int = MAX_MESSAGE_BYTES
    keepalive_time_ms: int | None = None
    metadata: tuple[tuple[str, str], ...] = ()
    server_interceptors: tuple[grpc.aio.ServerInterceptor, ...] = field(default=())
    tls: Tls | None = None

    def _options(self, extra: ChannelOptions) -> list[tuple[str, Any]]:
        options = message_options(self.max_message_bytes)
        if self.keepalive_time_ms is not None:
            options.append(("grpc.keepalive_time_ms", self.keepalive_time_ms))
        if self.tls is not None and self.tls.server_name is not None:
            options.append(("grpc.ssl_target_name_override", self.tls.server_name))
        return [*options, *extra]

    def server(self, options: ChannelOptions = (), *, shared: bool = False) -> grpc.aio.Server:
        """A grpc.aio server; ports are added with `listen`. A port is not shared with another
        process (gRPC would otherwise set SO_REUSEPORT and split the traffic), unless `shared`:
        for worker processes whose parent holds the port (ports.reserve_shared)."""
        return grpc.aio.server(
            interceptors=self.server_interceptors,
            options=[*self._options(options), ("grpc.so_reuseport", int(shared))],
        )

    def sync_server(self, max_workers: int, options: ChannelOptions = ()) -> grpc.Server:
        """A thread-pool gRPC server (for fakes of other services in tests and tools)."""
        return grpc.server(
            futures.ThreadPoolExecutor(max_workers),
            options=[*self._options(options), ("grpc.so_reuseport", 0)],
        )

    def listen(self, server: grpc.Server | grpc.aio.Server, address: str) -> int:
        """Listen on `address` (HOST:PORT, port 0 = any), with TLS when set; the port bound,
        or PortInUse (TlsError when the certificate files do not load)."""
        try:
            if self.tls is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, self.tls.server_credentials())
        except RuntimeError as e:  # grpcio >= 1.56 raises where older ones returned 0
            raise PortInUse(f"cannot listen on {address}: the port is in use ({e})") from e
        if port == 0:
            raise PortInUse(f"cannot listen on {address}: the port is in use")
        return int(port)

    def channel(self, address: str, options: ChannelOptions = ()) -> grpc.Channel:
        """A blocking channel to `address`."""
        if self.tls is None:
            channel = grpc.insecure_channel(address, options=self._options(options))
        else:
            channel = grpc.secure_channel(
                address, self.tls.channel_credentials(), options=self._options(options)
            )
        if self.metadata:
            channel = grpc.intercept_channel(channel, _SyncMetadata(self.metadata))
        return channel

    def aio_channel(self, address: str, options: ChannelOptions = ()) -> grpc.aio.Channel:
        """An asyncio channel to `address` (bound to the running event loop)."""
        if self.tls is None:
            channel = grpc.aio.insecure_channel(address, options=self._options(options))
        else:
            channel = grpc.aio.secure_channel(
                address, self.tls.channel_credentials(), options=self._options(options)
            )
        return _AioMetadataChannel(channel, self.metadata) if self.metadata else channel

    def _triton_credentials(self) -> grpc.ChannelCredentials | None:
        """tritonclient's `creds`: the same as its ssl/root_certificates/private_key/
        certificate_chain arguments, read and checked once here."""
        return None if self.tls is None else self.tls.channel_credentials()

    def triton(self, url: str, options: ChannelOptions = ()) -> grpcclient.InferenceServerClient:
        """A blocking tritonclient client to a KServe v2 server (Triton, gateway or agent)."""
        return grpcclient.InferenceServerClient(
            url, creds=self._triton_credentials(), channel_args=self._options(options)
        )

    def triton_aio(self, url: str, options: ChannelOptions = ()) -> aioclient.InferenceServerClient:
        """An asyncio tritonclient client (create it inside the loop that uses it)."""
        return aioclient.InferenceServerClient(
            url, creds=self._triton_credentials(), channel_args=self._options(options)
        )

    def triton_http(self, url: str) -> Any:
        """A blocking tritonclient.http client to a KServe v2 REST server (Triton or agent),
        verifying against this transport's CA and showing its certificate; pass `headers` per
        call. Imported here: only REST callers need tritonclient's http extra (gevent)."""
        import tritonclient.http as httpclient

        if self.tls is None:
            return httpclient.InferenceServerClient(url)
        files = {"ca_certs": self.tls.ca, "certfile": self.tls.cert, "keyfile": self.tls.key}
        options = {name: str(path) for name, path in files.items() if path is not None}
        return httpclient.InferenceServerClient(url, ssl=True, ssl_options=options)

    def triton_http_aio(self, url: str) -> Any:
        """An asyncio tritonclient.http client (aiohttp) to a KServe v2 REST server, with the
        same TLS as `triton_http`; create it inside the loop that uses it."""
        import ssl

        import tritonclient.http.aio as aiohttpclient

        if self.tls is None:
            return aiohttpclient.InferenceServerClient(url)
        context = ssl.create_default_context(cafile=str(self.tls.ca) if self.tls.ca else None)
        if self.tls.cert is not None and self.tls.key is not None:
            context.load_cert_chain(str(self.tls.cert), str(self.tls.key))
        return aiohttpclient.InferenceServerClient(url, ssl=True, ssl_context=context)

    @property
    def headers(self) -> dict[str, str]:
        """Per-call metadata as tritonclient's `headers`."""
        return dict(self.metadata)


def _with_metadata(details: Any, metadata: tuple[tuple[str, str], ...]) -> Any:
    return details._replace(metadata=(*(details.metadata or ()), *metadata))


class _SyncMetadata(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, metadata: tuple[tuple[str, str], ...]):
        self.metadata = metadata

    def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return continuation(_with_metadata(details, self.metadata), request)

    def intercept_unary_stream(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return continuation(_with_metadata(details, self.metadata), request)

    def intercept_stream_unary(self, continuation, details, requests):  # type: ignore[no-untyped-def]
        return continuation(_with_metadata(details, self.metadata), requests)

    def intercept_stream_stream(self, continuation, details, requests):  # type: ignore[no-untyped-def]
        return continuation(_with_metadata(details, self.metadata), requests)


class _AioMetadataChannel(grpc.aio.Channel):
    """An asyncio channel that sends `metadata` with every call, added to the call's own as
    the call is made. Not a grpc.aio client interceptor: one runs every call in an asyncio task
    of its own, which cost +0.07 ms a call (a small call on loopback takes about 0.5 ms)."""

    def __init__(self, channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...]):
        self._channel = channel
        self._metadata = metadata

    async def __aenter__(self) -> _AioMetadataChannel:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._channel.close()

    async def close(self, grace: float | None = None) -> None:
        await self._channel.close(grace)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._channel.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._channel.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._channel.channel_ready()

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Sending(self._channel.unary_unary(method, *args, **kwargs), self._metadata)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Sending(self._channel.unary_stream(method, *args, **kwargs), self._metadata)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Sending(self._channel.stream_unary(method, *args, **kwargs), self._metadata)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _Sending(self._channel.stream_stream(method, *args, **kwargs), self._metadata)


class _Sending:
    """One method's multicallable of an _AioMetadataChannel."""

    def __init__(self, call: Any, metadata: tuple[tuple[str, str], ...]):
        self._call = call
        self._metadata = metadata

    def __call__(self, *args: Any, metadata: Any = None, **kwargs: Any) -> Any:
        return self._call(*args, metadata=(*(metadata or ()), *self._metadata), **kwargs)


PLAINTEXT = Transport()
