"""Every test that starts a server (a gRPC listener or a child process) is marked integration."""

from collections.abc import Iterator
from typing import Any

import pytest

from edgecascade.cloud.common.launcher import ChildProcess
from edgecascade.cloud.common.transport import Transport


@pytest.fixture(autouse=True)
def _servers_only_in_integration_tests(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    if request.node.get_closest_marker("integration") is None:

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError(
                f"{request.node.nodeid} starts a server: mark it @pytest.mark.integration"
            )

        monkeypatch.setattr(Transport, "listen", refuse)
        monkeypatch.setattr(ChildProcess, "launch", refuse)
    yield
