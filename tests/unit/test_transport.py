"""The transport module builds every gRPC server, channel and tritonclient client."""

import ast
import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from edgecascade.cloud.common.transport import PLAINTEXT, PortInUse, Transport

ROOT = Path(__file__).resolve().parents[2]
TRANSPORT = ROOT / "cloud" / "common" / "transport.py"
# Calls that build a server, a channel or a client by hand.
FORBIDDEN_ATTRIBUTES = {
    "insecure_channel",
    "secure_channel",
    "add_insecure_port",
    "InferenceServerClient",
}
FORBIDDEN_DOTTED = {"grpc.server", "grpc.aio.server"}


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def hand_built(path: Path) -> list[str]:
    """`file:line call` for every call in `path` that bypasses the transport module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name.rsplit(".", 1)[-1] in FORBIDDEN_ATTRIBUTES or name in FORBIDDEN_DOTTED:
            found.append(f"{path.name}:{node.lineno} {name}")
    return found


def test_hand_built_detects_each_forbidden_call(tmp_path: Path) -> None:
    source = tmp_path / "bad.py"
    source.write_text(
        "import grpc, tritonclient.grpc as t\n"
        "grpc.insecure_channel('a')\ngrpc.aio.insecure_channel('a')\ngrpc.server(None)\n"
        "grpc.aio.server()\ns.add_insecure_port('x')\nt.InferenceServerClient('u')\n"
        "InferenceServerClient('u')\n"
    )
    assert len(hand_built(source)) == 7


def test_no_module_builds_grpc_objects_by_hand() -> None:
    files = [
        path
        for folder in ("edge", "router", "cloud", "proto/edgecascade/client", "tests")
        for path in (ROOT / folder).rglob("*.py")
        if path != TRANSPORT and path != Path(__file__).resolve()
    ]
    assert len(files) > 50
    offenders = [hit for path in files for hit in hand_built(path)]
    assert offenders == [], "build these through cloud.common.transport"


def _parse(reply: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in reply.decode().splitlines() if line)


async def _echo_metadata(transport: Transport, address: str) -> list[dict[str, str]]:
    """The metadata the server saw on a call of each kind (unary and streaming), each call
    sending `x-edgecascade-call` of its own too."""
    own = {"timeout": 5, "metadata": (("x-edgecascade-call", "1"),)}
    async with transport.aio_channel(address) as channel:
        replies = [
            await channel.unary_unary("/test.Echo/Metadata")(b"", **own),
            *[r async for r in channel.unary_stream("/test.Echo/ServerStream")(b"", **own)],
            await channel.stream_unary("/test.Echo/ClientStream")(iter([b""]), **own),
            *[r async for r in channel.stream_stream("/test.Echo/Bidi")(iter([b""]), **own)],
        ]
    return [_parse(reply) for reply in replies]


def _sync_echo_metadata(transport: Transport, address: str) -> list[dict[str, str]]:
    with transport.channel(address) as channel:
        replies = [
            channel.unary_unary("/test.Echo/Metadata")(b"", timeout=5),
            *channel.unary_stream("/test.Echo/ServerStream")(b"", timeout=5),
            channel.stream_unary("/test.Echo/ClientStream")(iter([b""]), timeout=5),
            *channel.stream_stream("/test.Echo/Bidi")(iter([b""]), timeout=5),
        ]
    return [_parse(reply) for reply in replies]


async def _metadata_server() -> tuple[grpc.aio.Server, str]:
    def seen(context: grpc.aio.ServicerContext) -> bytes:
        return "\n".join(f"{m.key}={m.value}" for m in context.invocation_metadata()).encode()

    async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return seen(context)

    async def server_stream(
        request: bytes, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        yield seen(context)

    async def client_stream(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> bytes:
        return seen(context)

    async def bidi(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        yield seen(context)

    server = PLAINTEXT.server()
    methods = {
        "Metadata": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", methods),))
    port = PLAINTEXT.listen(server, "127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


@pytest.mark.integration  # a loopback gRPC server
def test_channels_send_the_transport_metadata_with_every_call() -> None:
    """On unary and streaming calls alike, asyncio and blocking channels, besides the
    metadata a call sends itself."""

    async def main() -> tuple[list[dict[str, str]], ...]:
        server, address = await _metadata_server()
        try:
            tagged = Transport(metadata=(("x-edgecascade-test", "42"),))
            aio_seen = await _echo_metadata(tagged, address)
            plain_seen = await _echo_metadata(PLAINTEXT, address)
            sync_seen = await asyncio.to_thread(_sync_echo_metadata, tagged, address)
            return aio_seen, plain_seen, sync_seen
        finally:
            await server.stop(None)

    aio_seen, plain_seen, sync_seen = asyncio.run(main())
    assert [seen["x-edgecascade-test"] for seen in aio_seen] == ["42"] * 4
    assert [seen["x-edgecascade-call"] for seen in aio_seen + plain_seen] == ["1"] * 8
    assert [seen["x-edgecascade-test"] for seen in sync_seen] == ["42"] * 4
    assert len(plain_seen) == 4
    assert all("x-edgecascade-test" not in seen for seen in plain_seen)


@pytest.mark.integration  # a loopback gRPC server
def test_a_port_held_by_another_program_is_an_error() -> None:
    async def main() -> None:
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]
            server = PLAINTEXT.server()
            with pytest.raises(PortInUse, match=f"127.0.0.1:{port}"):
                PLAINTEXT.listen(server, f"127.0.0.1:{port}")

    asyncio.run(main())


@pytest.mark.integration  # a loopback gRPC server
def test_a_second_grpc_server_does_not_share_the_port() -> None:
    async def main() -> None:
        first = PLAINTEXT.server()
        port = PLAINTEXT.listen(first, "127.0.0.1:0")
        await first.start()
        try:
            with pytest.raises(PortInUse):
                PLAINTEXT.listen(PLAINTEXT.server(), f"127.0.0.1:{port}")
        finally:
            await first.stop(None)

    asyncio.run(main())


@pytest.mark.integration  # a loopback gRPC server
def test_message_limit_applies_to_servers_and_channels() -> None:
    async def main() -> grpc.StatusCode:
        small = Transport(max_message_bytes=1024)
        server, address = await _metadata_server()
        try:
            async with small.aio_channel(address) as channel:
                try:
                    await channel.unary_unary("/test.Echo/Metadata")(b"x" * 4096, timeout=5)
                except grpc.aio.AioRpcError as e:
                    return e.code()
            return grpc.StatusCode.OK
        finally:
            await server.stop(None)

    assert asyncio.run(main()) == grpc.StatusCode.RESOURCE_EXHAUSTED
