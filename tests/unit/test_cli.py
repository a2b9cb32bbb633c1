"""The CLI's own options: the version, the exit code of a fleet with an unreachable agent, and a
user's mistake as one error line and exit code 2."""

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


def test_a_mistake_is_one_error_line_and_exit_code_2_inside_the_cli_runner_too() -> None:
    result = CliRunner().invoke(app, ["models", "build", "--family", "nosuch"])
    assert result.exit_code == 2
    assert result.stderr == "error: unknown family 'nosuch'; known: fashion, imagenet\n"
