"""What every command shares: logging to stderr, running a grpc.aio server coroutine until
SIGINT or SIGTERM (on uvloop where it is installed: libuv's event loop, which grpc.aio runs
on like any asyncio loop), checking the addresses it is given, and turning the user's mistakes into
one line on stderr and exit code 2."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, Literal

from edgecascade.cloud.common.errors import UserError

EventLoop = Literal["auto", "uvloop", "asyncio"]  # auto: uvloop where installed, else asyncio
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
USAGE_EXIT_CODE = 2
# a DNS name or IPv4 address, or an IPv6 address in brackets
_HOST = re.compile(r"[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]")


def log_to_stderr() -> None:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)


@contextmanager
def user_errors() -> Iterator[None]:
    """A UserError (a PortInUse, a TlsError, ...) raised inside is `error: <message>` on stderr
    and exit code 2, without a traceback. The CLI's entry point runs every command inside it."""
    try:
        yield
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(USAGE_EXIT_CODE) from None


def check_address(what: str, address: str) -> str:
    """`address` if it is HOST:PORT (port 1-65535); else a UserError that names `what`."""
    host, colon, port = address.rpartition(":")
    if not (colon and _HOST.fullmatch(host) and port.isascii() and port.isdigit()):
        raise UserError(
            f"{what} {address!r} is not HOST:PORT (e.g. 127.0.0.1:8001 or [::1]:8001, "
            "without a scheme or a path)"
        )
    if not 0 < int(port) < 65536:
        raise UserError(f"{what} {address!r}: port {port} is not between 1 and 65535")
    return address


def address_validator(what: str) -> Callable[[str], str]:
    """A pydantic validator of HOST:PORT settings: check_address naming `what`, its UserError
    a ValueError, which pydantic reports with the value's origin."""

    def validate(address: str) -> str:
        try:
            return check_address(what, address)
        except UserError as e:
            raise ValueError(str(e)) from None

    return validate


def run_until_signalled(
    serve: Callable[[asyncio.Event], Awaitable[None]], loop: EventLoop = "auto"
) -> None:
    """Log to stderr and run `serve(stop)` on `loop`; SIGINT or SIGTERM sets `stop`."""
    log_to_stderr()

    async def main() -> None:
        stop = asyncio.Event()
        running = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            running.add_signal_handler(sig, stop.set)
        await serve(stop)

    event_loop_runner(loop)(main())


def event_loop_runner(loop: EventLoop) -> Callable[[Coroutine[Any, Any, None]], None]:
    """What runs a server's main coroutine: uvloop's `run` for `uvloop` (and for `auto` where
    uvloop is installed), else `asyncio.run`."""
    if loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                raise UserError(
                    "event loop uvloop: uvloop is not installed (pip install uvloop, or use "
                    "asyncio)"
                ) from None
        else:
            return uvloop.run
    return asyncio.run
