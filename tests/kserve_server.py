"""A small KServe v2 gRPC server for tests: raw-bytes handlers for the methods given."""

from collections.abc import Awaitable, Callable

import grpc

from edgecascade.cloud.common.transport import PLAINTEXT

Handler = Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]


async def start_kserve(handlers: dict[str, Handler]) -> tuple[grpc.aio.Server, str]:
    """A started grpc.aio server answering `handlers` (method name -> handler) on a free
    loopback port, and its host:port."""
    server = PLAINTEXT.server()
    methods = {name: grpc.unary_unary_rpc_method_handler(h) for name, h in handlers.items()}
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("inference.GRPCInferenceService", methods),)
    )
    port = PLAINTEXT.listen(server, "127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"
