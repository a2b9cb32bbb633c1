"""A server told to listen on a port another program holds says so and exits 2."""

import socket
import subprocess
from collections.abc import Iterator

import pytest

from edgecascade.cloud.common.launcher import edgecascade_command
from edgecascade.cloud.common.manifest import Manifest

pytestmark = pytest.mark.integration


@pytest.fixture
def held_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    command = edgecascade_command(*args)
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_edge_serve_on_a_taken_port(fashion_manifest: Manifest, held_port: int) -> None:
    result = _run("edge", "serve", "--insecure", "--family", "fashion", "--port", str(held_port))
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and f"127.0.0.1:{held_port}" in last and "in use" in last
    assert "Traceback" not in result.stderr


def test_router_serve_on_a_taken_port(held_port: int) -> None:
    result = _run("router", "serve", "--upstream", "127.0.0.1:1", "--port", str(held_port))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "in use" in result.stderr and "Traceback" not in result.stderr
