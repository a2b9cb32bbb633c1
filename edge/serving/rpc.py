"""What the agent's gRPC services share: request errors as status codes, in-order streams."""

from __future__ import annotations

import asyncio
import inspect
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, NoReturn, TypeAlias, TypeVar

import grpc

from edgecascade.cloud.common.errors import InternalFailure, InvalidInput, RequestError

__all__ = [
    "InternalErrors",
    "RequestError",
    "abort",
    "deadline",
    "metadata",
    "ordered",
    "request_deadline",
]

Request = TypeVar("Request")
Response = TypeVar("Response")
# a servicer method, as grpc calls it: (request or request iterator, context) -> response(s)
UnaryBehaviour: TypeAlias = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
StreamBehaviour: TypeAlias = Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]


def deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The call's gRPC deadline as a time.perf_counter() value (None: the caller set none)."""
    remaining = context.time_remaining()
    return None if remaining is None else time.perf_counter() + remaining


def metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    """The call's text metadata by key (gRPC keys are lower case): where a caller's trace
    context comes in."""
    return {
        key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)
    }


def request_deadline(deadline: float | None, received_at: float, budget_ms: float) -> float | None:
    """The earlier of `deadline` and a request's own budget of `budget_ms` from its arrival
    (0: none); InvalidInput for a budget that is not a finite number of milliseconds >= 0."""
    if not math.isfinite(budget_ms) or budget_ms < 0:
        raise InvalidInput(
            f"deadline_ms must be a finite number of milliseconds >= 0 (0: no budget of its "
            f"own), got {budget_ms}"
        )
    if budget_ms == 0:
        return deadline
    budget_end = received_at + budget_ms / 1e3
    return budget_end if deadline is None else min(deadline, budget_end)


async def abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, details: str) -> NoReturn:
    """`context.abort(code, details)`, which always raises (grpc.aio.AbortError): typed so,
    since grpc ships no type information."""
    await context.abort(code, details)
    raise AssertionError("grpc.aio.ServicerContext.abort returned")  # it never does


async def ordered(
    requests: AsyncIterator[Request],
    handle: Callable[[Request], Coroutine[Any, Any, Response]],
    window: int,
) -> AsyncIterator[Response]:
    """Answer a stream's requests concurrently, in arrival order: at most `window` of them are
    read and not yet answered; the next is read once the oldest is answered (back-pressure)."""
    pending: asyncio.Queue[asyncio.Task[Response] | None] = asyncio.Queue()
    slots = asyncio.Semaphore(window)

    async def read() -> None:
        iterator = aiter(requests)
        while True:
            await slots.acquire()  # a slot before reading the next request
            try:
                request = await anext(iterator)
            except StopAsyncIteration:
                break
            await pending.put(asyncio.create_task(handle(request)))
        await pending.put(None)

    reader = asyncio.create_task(read())
    try:
        while (task := await pending.get()) is not None:
            try:
                yield await task
            finally:
                slots.release()
        await reader
    finally:
        reader.cancel()
        while not pending.empty():
            if task := pending.get_nowait():
                task.cancel()


class InternalErrors(grpc.aio.ServerInterceptor):
    """A RequestError a handler lets out is answered with its status; a bug (any other
    exception) is answered INTERNAL with a log line, never grpc's UNKNOWN with Python's text."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if handler.unary_unary:
            return handler._replace(unary_unary=_guard_unary(method, handler.unary_unary))
        if handler.stream_unary:
            return handler._replace(stream_unary=_guard_unary(method, handler.stream_unary))
        if inspect.isasyncgenfunction(handler.unary_stream):
            return handler._replace(unary_stream=_guard_stream(method, handler.unary_stream))
        if inspect.isasyncgenfunction(handler.stream_stream):
            return handler._replace(stream_stream=_guard_stream(method, handler.stream_stream))
        return handler  # streams written with context.write (grpc's health Watch)


@asynccontextmanager
async def _answered(method: str, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    """A RequestError becomes its status; any other exception INTERNAL, logged."""
    try:
        yield
    except RequestError as e:
        await context.abort(e.code, str(e))
    except (grpc.aio.AbortError, asyncio.CancelledError):
        raise
    except Exception as e:
        failure = InternalFailure.logged(method, e)
        await context.abort(failure.code, str(failure))


def _guard_unary(method: str, behaviour: UnaryBehaviour) -> UnaryBehaviour:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with _answered(method, context):
            return await behaviour(request, context)

    return guarded


def _guard_stream(method: str, behaviour: StreamBehaviour) -> StreamBehaviour:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async with _answered(method, context):
            async for response in behaviour(request, context):
                yield response

    return guarded
