"""The project's exceptions that are a caller's to fix or retry, each with its gRPC status.

Anything else raised inside a handler is a bug: answered INTERNAL and logged, never mistaken
for the caller's fault.
"""

from __future__ import annotations

import grpc


class RequestError(Exception):
    """A request the server cannot answer as asked; `code` is the status a caller gets."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class InvalidInput(RequestError, ValueError):
    """The request itself is wrong (unreadable image, bad shape or type)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(RequestError):
    """The request names something this server does not have (a model, a version)."""

    code = grpc.StatusCode.NOT_FOUND


class Overloaded(RequestError):
    """No room for the request now; retry later or elsewhere."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
