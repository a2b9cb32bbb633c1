"""Callers and scopes: the Authorizer interceptor on a real grpc.aio server, the caller file and
the `auth` commands."""

import asyncio
import hashlib
import json
import logging
import stat
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from typer.testing import CliRunner

from edgecascade.cloud.common import auth, certs
from edgecascade.cloud.common.auth import AuthError, Authorizer, Callers
from edgecascade.cloud.common.auth_commands import app
from edgecascade.cloud.common.transport import Tls, Transport

CLASSIFY = "/edgecascade.v1.Cascade/Classify"
CLASSIFY_STREAM = "/edgecascade.v1.Cascade/ClassifyStream"
GET_STATUS = "/edgecascade.v1.Cascade/GetStatus"
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
MODEL_LOAD = "/inference.GRPCInferenceService/RepositoryModelLoad"
UNLISTED = "/inference.GRPCInferenceService/SomethingNew"
WATCH = "/edgecascade.v1.ModelSync/WatchManifests"
HEALTH = "/grpc.health.v1.Health/Check"
OK = grpc.StatusCode.OK
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED


def with_tokens() -> tuple[Callers, dict[str, str]]:
    callers, tokens = Callers(), {}
    for name, scopes in {
        "edge-1": ("infer", "status"),
        "syncer": ("sync",),
        "operator": ("admin",),
    }.items():
        callers, tokens[name] = callers.with_new_token(name, scopes)
    return callers, tokens


class Ran:
    """The methods whose handler ran."""

    def __init__(self) -> None:
        self.methods: list[str] = []

    def unary(self, method: str) -> grpc.RpcMethodHandler:
        async def behaviour(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            self.methods.append(method)
            return b"ok"

        return grpc.unary_unary_rpc_method_handler(behaviour)

    def bidi(self, method: str) -> grpc.RpcMethodHandler:
        async def behaviour(
            requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[bytes]:
            self.methods.append(method)
            async for _ in requests:
                yield b"ok"

        return grpc.stream_stream_rpc_method_handler(behaviour)

    def written(self, method: str) -> grpc.RpcMethodHandler:
        """A server stream written with context.write (no async generator)."""

        async def behaviour(request: bytes, context: grpc.aio.ServicerContext) -> None:
            self.methods.append(method)
            await context.write(b"ok")

        return grpc.unary_stream_rpc_method_handler(behaviour)


@asynccontextmanager
async def serving(callers: Callers, tls: Tls | None = None) -> AsyncIterator[tuple[str, Ran]]:
    ran = Ran()
    transport = Transport(server_interceptors=(Authorizer(callers),), tls=tls)
    server = transport.server()
    services: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for method in (CLASSIFY, GET_STATUS, MODEL_INFER, MODEL_LOAD, UNLISTED, HEALTH):
        service, name = method.strip("/").split("/")
        services.setdefault(service, {})[name] = ran.unary(method)
    services["edgecascade.v1.Cascade"]["ClassifyStream"] = ran.bidi(CLASSIFY_STREAM)
    services["edgecascade.v1.ModelSync"] = {"WatchManifests": ran.written(WATCH)}
    server.add_generic_rpc_handlers(
        tuple(grpc.method_handlers_generic_handler(s, m) for s, m in services.items())
    )
    port = transport.listen(server, "127.0.0.1:0")
    await server.start()
    try:
        yield f"localhost:{port}", ran
    finally:
        await server.stop(None)


async def call(
    address: str, method: str, token: str | None = None, transport: Transport | None = None
) -> tuple[grpc.StatusCode, str]:
    """(status, details) of one call of `method`, with `authorization: Bearer <token>`."""
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else ()
    transport = transport or Transport(metadata=metadata)
    async with transport.aio_channel(address) as channel:
        try:
            if method == CLASSIFY_STREAM:
                replies = [r async for r in channel.stream_stream(method)(iter([b"a"]), timeout=5)]
                assert replies == [b"ok"]
            elif method == WATCH:
                assert [r async for r in channel.unary_stream(method)(b"", timeout=5)] == [b"ok"]
            else:
                assert await channel.unary_unary(method)(b"", timeout=5) == b"ok"
        except grpc.aio.AioRpcError as e:
            return e.code(), e.details() or ""
    return OK, ""


def run(main: Coroutine[Any, Any, None]) -> None:
    asyncio.run(main)


@pytest.mark.parametrize(
    ("caller", "method", "code", "says"),
    [
        ("edge-1", CLASSIFY, OK, ""),
        ("edge-1", CLASSIFY_STREAM, OK, ""),
        ("edge-1", MODEL_INFER, OK, ""),
        ("edge-1", GET_STATUS, OK, ""),
        ("edge-1", WATCH, PERMISSION_DENIED, "needs scope 'sync'; caller 'edge-1' has infer"),
        ("edge-1", MODEL_LOAD, PERMISSION_DENIED, "RepositoryModelLoad needs scope 'admin'"),
        ("syncer", WATCH, OK, ""),
        ("syncer", CLASSIFY_STREAM, PERMISSION_DENIED, "needs scope 'infer'"),
        ("operator", MODEL_LOAD, OK, ""),
        ("operator", CLASSIFY, PERMISSION_DENIED, "needs scope 'infer'"),
        ("operator", UNLISTED, PERMISSION_DENIED, "open to no caller"),
    ],
)
@pytest.mark.integration  # a loopback gRPC server
def test_each_method_needs_its_scope(
    caller: str, method: str, code: grpc.StatusCode, says: str
) -> None:
    """Allowed calls reach their handler; refused ones never do, and the message names the
    scope needed."""
    callers, tokens = with_tokens()

    async def main() -> None:
        async with serving(callers) as (address, ran):
            seen, details = await call(address, method, tokens[caller])
            assert seen == code and says in details
            assert ran.methods == ([method] if code == OK else [])

    run(main())


@pytest.mark.parametrize(
    ("authorization", "says"),
    [
        (None, "no credentials: send the metadata `authorization: Bearer <token>`"),
        ("Bearer", "is not `Bearer <token>`"),
        ("Basic dXNlcjpwYXNzd29yZHBhc3N3b3Jk", "is not `Bearer <token>`"),
        ("Bearer short", "is not `Bearer <token>`"),
        ("Bearer has spaces in the middle of it", "is not `Bearer <token>`"),
        ("Bearer " + "x" * 600, "is not `Bearer <token>`"),
        ("Bearer UnknownTokenUnknownTokenUnknownToken", "not known to this server"),
    ],
)
@pytest.mark.integration  # a loopback gRPC server
def test_missing_malformed_and_unknown_tokens_are_unauthenticated(
    authorization: str | None, says: str, caplog: pytest.LogCaptureFixture
) -> None:
    callers, _ = with_tokens()
    metadata = (("authorization", authorization),) if authorization is not None else ()

    async def main() -> None:
        async with serving(callers) as (address, ran):
            code, details = await call(address, CLASSIFY, transport=Transport(metadata=metadata))
            assert code == UNAUTHENTICATED and says in details
            assert "add-token" in details
            assert ran.methods == []
            if authorization and " " in authorization:
                secret = authorization.split(" ", 1)[1]
                assert secret not in details and secret not in caplog.text

    with caplog.at_level(logging.INFO):
        run(main())
    assert "refused '/edgecascade.v1.Cascade/Classify'" in caplog.text


@pytest.mark.integration  # a loopback gRPC server
def test_two_authorization_entries_are_refused() -> None:
    callers, tokens = with_tokens()
    bearer = ("authorization", f"Bearer {tokens['edge-1']}")

    async def main() -> None:
        async with serving(callers) as (address, _):
            code, details = await call(
                address, CLASSIFY, transport=Transport(metadata=(bearer,) * 2)
            )
            assert code == UNAUTHENTICATED and "send one" in details

    run(main())


@pytest.mark.integration  # a loopback gRPC server
def test_health_is_open_to_everyone() -> None:
    async def main() -> None:
        async with serving(Callers()) as (address, ran):
            assert await call(address, HEALTH) == (OK, "")
            assert ran.methods == [HEALTH]

    run(main())


def test_tokens_are_compared_in_constant_time_with_every_entry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    callers, tokens = with_tokens()
    compared: list[tuple[bytes, bytes]] = []

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return a == b

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    authorizer = Authorizer(callers)
    caller = authorizer.authenticate([("authorization", f"Bearer {tokens['edge-1']}")], {})
    assert caller.name == "edge-1"
    digest = hashlib.sha256(tokens["edge-1"].encode()).digest()
    assert [a for a, _ in compared] == [digest] * 3  # no early exit after the first entry matched
    assert {b.hex() for _, b in compared} == {c.token_sha256 for c in callers.callers}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, certs.Issued]:
    folder = tmp_path_factory.mktemp("ca")
    return {
        "ca": certs.init(folder),
        "server": certs.issue(folder, "server"),
        "edge-1": certs.issue(folder, "edge-1", kind="client"),
        "edge-2": certs.issue(folder, "edge-2", kind="client"),
    }


@pytest.mark.integration  # a loopback gRPC server
def test_a_client_certificate_identifies_the_caller(pki: dict[str, certs.Issued]) -> None:
    callers, tokens = with_tokens()
    callers = callers.with_certificate("camera-1", "edge-1", ["infer"])
    server = pki["server"]
    tls = Tls(ca=pki["ca"].cert, cert=server.cert, key=server.key, require_client_cert=True)

    def client(who: str, token: str | None = None) -> Transport:
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        cert = pki[who]
        return Transport(
            tls=Tls(ca=pki["ca"].cert, cert=cert.cert, key=cert.key), metadata=metadata
        )

    async def main() -> None:
        async with serving(callers, tls) as (address, ran):
            assert await call(address, CLASSIFY, transport=client("edge-1")) == (OK, "")
            code, details = await call(address, GET_STATUS, transport=client("edge-1"))
            assert code == PERMISSION_DENIED and "caller 'camera-1' has infer" in details
            code, details = await call(address, CLASSIFY, transport=client("edge-2"))
            assert code == UNAUTHENTICATED and "'edge-2' is not a caller" in details
            # A token, when sent, decides: the operator's token on edge-1's connection.
            operator = client("edge-1", tokens["operator"])
            assert await call(address, MODEL_LOAD, transport=operator) == (OK, "")
            assert ran.methods == [CLASSIFY, MODEL_LOAD]

    run(main())


def test_the_caller_file_keeps_only_hashes(tmp_path: Path) -> None:
    callers, tokens = with_tokens()
    path = tmp_path / "callers.json"
    callers.save(path)
    text = path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for token in tokens.values():
        assert token not in text
        assert hashlib.sha256(token.encode()).hexdigest() in text
    assert Callers.load(path) == callers
    entry = json.loads(text)["callers"][0]
    assert entry == {
        "name": "edge-1",
        "scopes": ["infer", "status"],
        "token_sha256": hashlib.sha256(tokens["edge-1"].encode()).hexdigest(),
    }


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "cannot be read"),
        ('{"callers": [{"name": "a", "scopes": ["root"], "certificate": "a"}]}', "scopes.0"),
        ('{"callers": [{"name": "a", "scopes": ["infer"]}]}', "not both"),
        (
            '{"callers": [{"name": "a", "scopes": ["infer"], "token_sha256": "abc"}]}',
            "64 lowercase",
        ),
        ("not json", "callers.json"),
    ],
)
def test_a_broken_caller_file_is_a_clear_error(
    tmp_path: Path, content: str | None, says: str
) -> None:
    path = tmp_path / "callers.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(AuthError, match=f"caller file {path}.*{says}|{says}"):
        Callers.load(path)


def test_names_and_certificates_are_unique() -> None:
    callers, _ = with_tokens()
    with pytest.raises(AuthError, match="same name 'edge-1'"):
        callers.with_new_token("edge-1", ["infer"])
    callers = callers.with_certificate("cam", "cn-1", ["infer"])
    with pytest.raises(AuthError, match="same certificate 'cn-1'"):
        callers.with_certificate("cam-2", "cn-1", ["infer"])


def test_auth_commands_print_the_token_once_and_store_its_hash(tmp_path: Path) -> None:
    path = tmp_path / "callers.json"
    runner = CliRunner()
    result = runner.invoke(
        app, ["add-token", "--file", str(path), "--name", "edge-1", "--scope", "infer"]
    )
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert len(token.splitlines()) == 1 and token not in path.read_text()
    caller = Authorizer(Callers.load(path)).authenticate([("authorization", f"Bearer {token}")], {})
    assert caller.name == "edge-1" and caller.scopes == ("infer",)
    result = runner.invoke(
        app,
        ["add-certificate", "--file", str(path), "--name", "cam", "--scope", "status"]
        + ["--scope", "infer", "--common-name", "edge-7"],
    )
    assert result.exit_code == 0, result.output
    assert Callers.load(path).callers[1].scopes == ("infer", "status")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--name", "edge-1", "--scope", "root"], "scope 'root': expected one of"),
        (["--name", "edge-1", "--scope", "infer"], "same name 'edge-1'"),
        (["--name", "../x", "--scope", "infer"], "caller name"),
    ],
)
def test_auth_command_errors_are_one_line_and_exit_2(
    tmp_path: Path, args: list[str], says: str
) -> None:
    path = tmp_path / "callers.json"
    Callers().with_new_token("edge-1", ["infer"])[0].save(path)
    before = path.read_text()
    result = CliRunner().invoke(app, ["add-token", "--file", str(path), *args])
    assert result.exit_code == 2
    assert says in result.output and len(result.output.strip().splitlines()) == 1
    assert path.read_text() == before
