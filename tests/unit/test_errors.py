"""Request errors carry their gRPC status; a bug is never mistaken for the caller's fault."""

import grpc
import pytest

from edgecascade.cloud.common.errors import InvalidInput, NotFound, Overloaded, RequestError
from edgecascade.cloud.common.preprocessing import InvalidImage, decode_image
from edgecascade.edge.serving.limits import InFlightLimit


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidImage("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (InvalidInput("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (NotFound("x"), grpc.StatusCode.NOT_FOUND),
        (Overloaded("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
)
def test_each_request_error_has_its_status(error: RequestError, code: grpc.StatusCode) -> None:
    assert isinstance(error, RequestError)
    assert error.code == code


def test_bugs_are_not_request_errors() -> None:
    for bug in (KeyError("k"), IndexError("i"), LookupError("l")):
        assert not isinstance(bug, RequestError)


def test_the_real_sources_raise_request_errors() -> None:
    with pytest.raises(RequestError) as unreadable:
        decode_image(b"not an image")
    assert unreadable.value.code == grpc.StatusCode.INVALID_ARGUMENT
    limit = InFlightLimit(0)
    with pytest.raises(RequestError) as full, limit.admit():
        pass
    assert full.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
