"""The CLI's own options: the version, and the exit code of a fleet with an unreachable agent."""

import socket
from importlib.metadata import version

from typer.testing import CliRunner

from edgecascade.edge.cli import app


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"edgecascade {version('edgecascade')}"


def test_status_of_an_unreachable_agent_exits_non_zero() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        result = CliRunner().invoke(app, ["status", "--agent", f"127.0.0.1:{port}", "--json"])
    assert result.exit_code == 1
    assert '"health": "UNREACHABLE"' in result.output
