"""edgecascade.client over TLS with a bearer token, against a loopback Cascade server behind the
Authorizer the agent's services use."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest

from edgecascade.client import CascadeClient, CascadeError, Tls, aio
from edgecascade.cloud.common import certs
from edgecascade.cloud.common.auth import Authorizer, Callers
from edgecascade.cloud.common.transport import Transport
from edgecascade.v1 import cascade_pb2 as pb
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration  # a loopback gRPC server


class Status(pb_grpc.CascadeServicer):
    async def GetStatus(
        self, request: pb.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetStatusResponse:
        return pb.GetStatusResponse(device="fake device")


@asynccontextmanager
async def serving(tls: Tls, callers: Callers) -> AsyncIterator[str]:
    transport = Transport(server_interceptors=(Authorizer(callers),), tls=tls)
    server = transport.server()
    pb_grpc.add_CascadeServicer_to_server(Status(), server)
    port = transport.listen(server, "127.0.0.1:0")
    await server.start()
    try:
        yield f"localhost:{port}"
    finally:
        await server.stop(None)


def test_tls_and_a_token_reach_the_server_and_a_missing_token_is_refused(tmp_path: Path) -> None:
    ca = certs.init(tmp_path)
    issued = certs.issue(tmp_path, "agent")
    callers, token = Callers().with_new_token("camera-1", ["status"])
    server_tls = Tls(cert=issued.cert, key=issued.key)
    client_tls = Tls(ca=ca.cert)

    def blocking(address: str, token: str | None) -> str:
        with CascadeClient(address, tls=client_tls, token=token) as client:
            return client.status(client_timeout=5).device

    async def main() -> list[grpc.StatusCode]:
        async with serving(server_tls, callers) as address:
            async with aio.CascadeClient(address, tls=client_tls, token=token) as client:
                assert (await client.status(client_timeout=5)).device == "fake device"
            assert await asyncio.to_thread(blocking, address, token) == "fake device"
            refused = []
            for other in (None, "x" * 43):
                with pytest.raises(CascadeError) as failed:
                    await asyncio.to_thread(blocking, address, other)
                refused.append(failed.value.code)
            return refused

    assert asyncio.run(main()) == [grpc.StatusCode.UNAUTHENTICATED] * 2
