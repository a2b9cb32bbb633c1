"""TLS and mutual TLS through the transport: real handshakes on loopback, generated certificates."""

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from edgecascade.cloud.common import certs
from edgecascade.cloud.common.transport import PLAINTEXT, PortInUse, Tls, TlsError, Transport

pytestmark = pytest.mark.integration  # real TLS handshakes with loopback gRPC servers

WHOAMI = "/test.Echo/WhoAmI"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, certs.Issued]:
    """A CA with a server and clients (valid, expired), and a stranger CA with its client."""
    ours, other = tmp_path_factory.mktemp("ca"), tmp_path_factory.mktemp("other-ca")
    issued = {"ca": certs.init(ours), "other-ca": certs.init(other, name="stranger CA")}
    issued["server"] = certs.issue(ours, "server")
    issued["edge-1"] = certs.issue(ours, "edge-1", kind="client")
    ten_days_ago = datetime.now(UTC) - timedelta(days=10)
    issued["expired"] = certs.issue(ours, "expired", kind="client", days=1, now=ten_days_ago)
    issued["stranger"] = certs.issue(other, "stranger", kind="client")
    issued["stranger-server"] = certs.issue(other, "stranger-server")
    return issued


def server_tls(pki: dict[str, certs.Issued], mutual: bool = True) -> Tls:
    server = pki["server"]
    return Tls(ca=pki["ca"].cert, cert=server.cert, key=server.key, require_client_cert=mutual)


def client(pki: dict[str, certs.Issued], who: str | None = "edge-1", **kw: object) -> Transport:
    cert = pki[who] if who else None
    return Transport(
        tls=Tls(
            ca=pki["ca"].cert,
            cert=cert.cert if cert else None,
            key=cert.key if cert else None,
            **kw,
        )
    )


async def _whoami(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    """The caller's certificate common name, or '-' without one."""
    auth = context.auth_context()
    return b"".join(auth.get("x509_common_name", [b"-"]))


@asynccontextmanager
async def serving(transport: Transport) -> AsyncIterator[int]:
    server = transport.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "test.Echo", {"WhoAmI": grpc.unary_unary_rpc_method_handler(_whoami)}
            ),
        )
    )
    port = transport.listen(server, "127.0.0.1:0")
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


async def whoami(transport: Transport, address: str) -> str:
    async with transport.aio_channel(address) as channel:
        reply: bytes = await channel.unary_unary(WHOAMI)(b"", timeout=5)
    return reply.decode()


async def refused(call: Awaitable[str]) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call
    return e.value.code()


def run(main: Callable[[], Coroutine[None, None, None]]) -> None:
    asyncio.run(main())


def test_tls_without_client_certificates(pki: dict[str, certs.Issued]) -> None:
    async def main() -> None:
        async with serving(Transport(tls=server_tls(pki, mutual=False))) as port:
            assert await whoami(client(pki, who=None), f"localhost:{port}") == "-"
            assert await whoami(client(pki, who=None), f"127.0.0.1:{port}") == "-"

    run(main)


def test_mutual_tls_names_the_client(pki: dict[str, certs.Issued]) -> None:
    async def main() -> None:
        async with serving(Transport(tls=server_tls(pki))) as port:
            assert await whoami(client(pki), f"localhost:{port}") == "edge-1"
            with client(pki).channel(f"localhost:{port}") as channel:
                reply = await asyncio.to_thread(channel.unary_unary(WHOAMI), b"", timeout=5)
            assert reply == b"edge-1"

    run(main)


@pytest.mark.parametrize("who", ["stranger", "expired", None])
def test_mutual_tls_refuses_bad_client_certificates(
    pki: dict[str, certs.Issued], who: str | None
) -> None:
    """A client certificate from another CA, an expired one, or none at all: refused at the
    handshake, and the server keeps serving a good client."""

    async def main() -> None:
        async with serving(Transport(tls=server_tls(pki))) as port:
            address = f"localhost:{port}"
            bad = client(pki, who=who)
            assert await refused(whoami(bad, address)) == grpc.StatusCode.UNAVAILABLE
            assert await whoami(client(pki), address) == "edge-1"

    run(main)


def test_client_refuses_a_server_from_another_ca(pki: dict[str, certs.Issued]) -> None:
    stranger = pki["stranger-server"]

    async def main() -> None:
        async with serving(Transport(tls=Tls(cert=stranger.cert, key=stranger.key))) as port:
            code = await refused(whoami(client(pki, who=None), f"localhost:{port}"))
            assert code == grpc.StatusCode.UNAVAILABLE

    run(main)


def test_plaintext_to_a_tls_port_fails_fast_and_others_are_served(
    pki: dict[str, certs.Issued],
) -> None:
    async def main() -> None:
        async with serving(Transport(tls=server_tls(pki))) as port:
            address = f"localhost:{port}"
            start = time.perf_counter()
            assert await refused(whoami(PLAINTEXT, address)) == grpc.StatusCode.UNAVAILABLE
            assert time.perf_counter() - start < 2
            assert await whoami(client(pki), address) == "edge-1"

    run(main)


def test_tls_client_to_a_plaintext_port_fails(pki: dict[str, certs.Issued]) -> None:
    async def main() -> None:
        async with serving(PLAINTEXT) as port:
            code = await refused(whoami(client(pki), f"localhost:{port}"))
            assert code == grpc.StatusCode.UNAVAILABLE

    run(main)


def _kserve_server(transport: Transport) -> grpc.aio.Server:
    async def live(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return service_pb2.ServerLiveResponse(live=True).SerializeToString()  # type: ignore[no-any-return]

    server = transport.server()
    methods = {"ServerLive": grpc.unary_unary_rpc_method_handler(live)}
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("inference.GRPCInferenceService", methods),)
    )
    return server


def test_tritonclient_over_mutual_tls(pki: dict[str, certs.Issued]) -> None:
    async def main() -> None:
        server_transport = Transport(tls=server_tls(pki))
        server = _kserve_server(server_transport)
        url = f"localhost:{server_transport.listen(server, '127.0.0.1:0')}"
        await server.start()
        try:
            aio = client(pki).triton_aio(url)
            try:
                assert await aio.is_server_live()
            finally:
                await aio.close()
            with client(pki).triton(url) as blocking:
                assert await asyncio.to_thread(blocking.is_server_live)
            with PLAINTEXT.triton(url) as plain:
                with pytest.raises(InferenceServerException, match="UNAVAILABLE"):
                    await asyncio.to_thread(plain.is_server_live, client_timeout=5)
            with client(pki, who=None).triton(url) as anonymous:
                with pytest.raises(InferenceServerException, match="UNAVAILABLE"):
                    await asyncio.to_thread(anonymous.is_server_live, client_timeout=5)
        finally:
            await server.stop(None)

    run(main)


def test_renewed_server_certificate_is_used_without_a_restart(
    pki: dict[str, certs.Issued], tmp_path: Path
) -> None:
    """The server's files are replaced by a certificate for another name: new connections
    get it, the connection opened before keeps working, the server never restarts."""
    ca = tmp_path / "ca"
    certs.init(ca)
    served = certs.issue(ca, "served", hosts=["old.test"])
    tls = Tls(ca=pki["ca"].cert, cert=served.cert, key=served.key, require_client_cert=True)
    ca_cert = ca / certs.CA_CERT
    kept = pki["edge-1"]

    def expecting(name: str) -> Transport:
        return Transport(tls=Tls(ca=ca_cert, cert=kept.cert, key=kept.key, server_name=name))

    async def main() -> None:
        async with serving(Transport(tls=tls)) as port:
            address = f"127.0.0.1:{port}"
            async with expecting("old.test").aio_channel(address) as before:
                assert await before.unary_unary(WHOAMI)(b"", timeout=5) == b"edge-1"
                code = await refused(whoami(expecting("new.test"), address))
                assert code == grpc.StatusCode.UNAVAILABLE

                certs.issue(ca, "served", hosts=["new.test"])

                assert await whoami(expecting("new.test"), address) == "edge-1"
                code = await refused(whoami(expecting("old.test"), address))
                assert code == grpc.StatusCode.UNAVAILABLE
                assert await before.unary_unary(WHOAMI)(b"", timeout=5) == b"edge-1"

    run(main)


def test_a_key_that_does_not_match_keeps_the_current_certificate(
    pki: dict[str, certs.Issued], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca = tmp_path / "ca"
    certs.init(ca)
    served = certs.issue(ca, "served")
    other = certs.issue(ca, "other")
    tls = Tls(ca=pki["ca"].cert, cert=served.cert, key=served.key, require_client_cert=True)
    trusting = Transport(
        tls=Tls(ca=ca / certs.CA_CERT, cert=pki["edge-1"].cert, key=pki["edge-1"].key)
    )

    async def main() -> None:
        async with serving(Transport(tls=tls)) as port:
            certs.write_atomically(served.key, other.key.read_bytes(), mode=0o600)
            assert await whoami(trusting, f"localhost:{port}") == "edge-1"
            assert await whoami(trusting, f"localhost:{port}") == "edge-1"

    run(main)
    warnings = [r.getMessage() for r in caplog.records if "keeping the current" in r.getMessage()]
    assert len(warnings) == 1 and str(served.key) in warnings[0]
    assert "PRIVATE KEY" not in caplog.text


def test_tls_settings_that_cannot_work_are_clear_errors(
    pki: dict[str, certs.Issued], tmp_path: Path
) -> None:
    server = pki["server"]
    with pytest.raises(TlsError, match="certificate and its key together"):
        Tls(cert=server.cert)
    with pytest.raises(TlsError, match="needs the CA"):
        Tls(cert=server.cert, key=server.key, require_client_cert=True)
    with pytest.raises(TlsError, match="needs a certificate"):
        Transport(tls=Tls(ca=pki["ca"].cert)).listen(PLAINTEXT.sync_server(1), "127.0.0.1:0")
    missing = tmp_path / "missing.pem"
    with pytest.raises(TlsError, match=f"{missing} cannot be read"):
        Transport(tls=Tls(cert=missing, key=server.key)).channel("localhost:1")
    with pytest.raises(TlsError, match="is not the key of certificate"):
        Tls(cert=server.cert, key=pki["edge-1"].key).channel_credentials()


def test_a_tls_port_held_by_another_program_is_an_error(pki: dict[str, certs.Issued]) -> None:
    async def main() -> None:
        transport = Transport(tls=server_tls(pki))
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]
            with pytest.raises(PortInUse, match=f"127.0.0.1:{port}"):
                transport.listen(transport.server(), f"127.0.0.1:{port}")

    run(main)


def test_a_missing_certificate_file_is_a_tls_error_naming_it(tmp_path: Path) -> None:
    tls = Tls(cert=tmp_path / "nosuch.pem", key=tmp_path / "nosuch.key")
    with pytest.raises(TlsError, match="nosuch"):
        tls.server_credentials()
