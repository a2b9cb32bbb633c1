"""`edgecascade router upstreams add|remove|list` edit the file a gateway follows; the file's
format and its mistakes; what the gateway reads from it."""

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgecascade.cloud.common.errors import UserError
from edgecascade.edge.cli import app
from edgecascade.router.gateway.discovery import (
    DiscoveryError,
    UpstreamsFile,
    read_upstreams,
)


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["router", "upstreams", *args])
    return result.exit_code, result.output


def test_add_and_remove_edit_the_file_and_list_shows_it(tmp_path: Path) -> None:
    path = str(tmp_path / "upstreams.txt")
    assert run("add", "10.0.0.1:8001", "--file", path) == (0, f"added 10.0.0.1:8001 to {path}\n")
    assert run("add", "triton-1.triton.ns.svc.cluster.local:8001", "--file", path)[0] == 0
    assert run("add", "10.0.0.1:8001", "--file", path) == (
        0,
        f"10.0.0.1:8001 is already in {path}\n",
    )
    assert run("list", "--file", path) == (
        0,
        "10.0.0.1:8001\ntriton-1.triton.ns.svc.cluster.local:8001\n",
    )
    assert run("remove", "10.0.0.1:8001", "--file", path)[0] == 0
    assert read_upstreams(Path(path)) == ["triton-1.triton.ns.svc.cluster.local:8001"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("add", "triton"), "upstream 'triton' is not HOST:PORT"),
        (("add", "t:99999"), "port 99999 is not between 1 and 65535"),
        (("remove", "10.0.0.9:8001"), "10.0.0.9:8001 is not in"),
        (("list",), "does not exist: `edgecascade router upstreams add` creates it"),
    ],
)
def test_mistakes_are_one_error_line_and_exit_2(tmp_path: Path, args, message: str) -> None:
    path = tmp_path / ("missing.txt" if args[0] == "list" else "upstreams.txt")
    if args[0] != "list":
        path.write_text("10.0.0.1:8001\n")
    code, output = run(*args, "--file", str(path))
    assert code == 2 and output.count("\n") == 1, output
    assert output.startswith("error: ") and message in output
    if args[0] != "list":
        assert path.read_text() == "10.0.0.1:8001\n"  # unchanged


def test_the_file_allows_comments_and_names_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "upstreams.txt"
    path.write_text("# the cluster\n127.0.0.1:8001  # triton-0\n\nlocalhost:8002\n")
    assert read_upstreams(path) == ["127.0.0.1:8001", "localhost:8002"]
    found = asyncio.run(UpstreamsFile(path).endpoints())
    assert found["127.0.0.1:8001"] == "127.0.0.1:8001"
    assert found["localhost:8002"] in ("127.0.0.1:8002", "[::1]:8002")  # resolved for HAProxy
    path.write_text("127.0.0.1:8001\nhttp://triton:8001\n")
    with pytest.raises(UserError, match="upstreams.txt line 2: 'http://triton:8001'"):
        read_upstreams(path)
    with pytest.raises(DiscoveryError, match="line 2"):  # the gateway keeps what it had
        asyncio.run(UpstreamsFile(path).endpoints())
