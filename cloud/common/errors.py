"""The project's exceptions that are a caller's to fix or retry: each RequestError with its
gRPC status, and UserError for a command run with a mistake in it.

Anything else raised inside a handler is a bug: answered INTERNAL and logged, never mistaken
for the caller's fault.
"""

from __future__ import annotations

import logging

import grpc

log = logging.getLogger(__name__)


class UserError(Exception):
    """A mistake of whoever runs a command (an unknown family, a missing file, a malformed
    address, a device without a driver): the CLI prints `error: <message>` and exits 2."""


class RequestError(Exception):
    """A request the server cannot answer as asked; `code` is the status a caller gets."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class InvalidInput(RequestError, ValueError):
    """The request itself is wrong (unreadable image, bad shape or type)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(RequestError):
    """The request names something this server does not have (a model, a version)."""

    code = grpc.StatusCode.NOT_FOUND


class InternalFailure(RequestError):
    """A bug met while answering one request: that request is answered INTERNAL, a stream it
    came by goes on."""

    code = grpc.StatusCode.INTERNAL

    @classmethod
    def logged(cls, where: str, bug: Exception) -> InternalFailure:
        """Log `bug` (with its traceback) and describe it to the caller without its text."""
        log.error("bug in %s", where, exc_info=bug)
        return cls(f"internal error in {where} ({type(bug).__name__}); see the server's log")


class Overloaded(RequestError):
    """No room for the request now; retry later or elsewhere."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


def shown(value: str, limit: int = 80) -> str:
    """`value` quoted for a message, cut to `limit` characters: an error never echoes a huge
    input back to whoever sent it."""
    return repr(value if len(value) <= limit else value[:limit] + "…")
