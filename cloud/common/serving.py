"""Run a grpc.aio server coroutine from a command until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

from edgecascade.cloud.common.transport import PortInUse

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_to_stderr() -> None:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)


def run_until_signalled(serve: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Log to stderr and run `serve(stop)`; SIGINT or SIGTERM sets `stop`. A port in use is
    one line on stderr and exit code 2."""
    log_to_stderr()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(stop)

    try:
        asyncio.run(main())
    except PortInUse as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
