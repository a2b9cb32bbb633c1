"""Every CLI command turns the user's mistakes into one `error: ...` line on stderr and exit
code 2, never a traceback: real `edgecascade` processes, each given one mistake."""

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import openvino as ov
import pytest

from edgecascade.cloud.common.launcher import edgecascade_command
from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.paths import artifacts_root
from edgecascade.edge.tools.process import EdgeProcess
from tests.family_files import copy_family

pytestmark = pytest.mark.integration


def fails(*args: str, artifacts: Path | None = None) -> str:
    """Run `edgecascade *args`, which must exit 2 with one error line last on stderr (log lines
    before it are fine) and no traceback; that line, without `error: `."""
    env = {**os.environ, **({"EDGECASCADE_ARTIFACTS": str(artifacts)} if artifacts else {})}
    done = subprocess.run(
        edgecascade_command(*args), capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and done.stderr.endswith(errors[0] + "\n"), done.stderr[-3000:]
    return errors[0].removeprefix("error: ")


@pytest.fixture(scope="module")
def closed_port() -> Iterator[int]:
    """A port bound but never listening: connections to it are refused."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        yield closed.getsockname()[1]


@pytest.fixture
def frames(tmp_path: Path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((28, 28, 3), 40 * i, np.uint8))
    return folder


@pytest.mark.parametrize(
    "command",
    [
        ["edge", "serve", "--insecure"],
        ["demo"],
        ["bench", "edge"],
        ["bench", "preprocessing"],
        ["models", "build"],
        ["edge", "run", "--source", "0"],
    ],
    ids=" ".join,
)
def test_an_unknown_family(command: list[str]) -> None:
    assert fails(*command, "--family", "nosuch") == (
        "unknown family 'nosuch'; known: fashion, imagenet"
    )


@pytest.mark.parametrize(
    "command",
    [["edge", "serve", "--insecure"], ["demo"], ["bench", "edge"], ["bench", "preprocessing"]],
    ids=" ".join,
)
def test_a_family_not_built(command: list[str], tmp_path: Path) -> None:
    message = fails(*command, "--family", "fashion", artifacts=tmp_path)
    assert message.startswith(f"family 'fashion' is not built under {tmp_path}: run ")
    assert "`edgecascade models build --family fashion`" in message


def test_edge_run_starting_an_agent_for_a_family_not_built(frames: Path, tmp_path: Path) -> None:
    message = fails("edge", "run", "--source", str(frames), artifacts=tmp_path / "empty")
    assert message.startswith("family 'fashion' is not built under ")


@pytest.mark.skipif("GPU" in str(ov.Core().available_devices), reason="this machine has a GPU")
def test_a_device_without_a_driver(fashion_manifest: Manifest) -> None:
    message = fails(
        "edge", "serve", "--insecure", "--family", "fashion", "--device", "GPU", "--port", "0"
    )
    available = ", ".join(ov.Core().available_devices)
    assert message == (
        f"OpenVINO device 'GPU': no GPU (or no driver for it) on this machine; "
        f"available: {available}"
    )


@pytest.mark.parametrize("url", ["http://x:1/a", "host:notaport", "::::"])
def test_a_malformed_cloud_url(url: str, frames: Path) -> None:
    message = fails("edge", "serve", "--insecure", "--cloud-url", url)
    assert message.startswith(
        f"invalid edge agent settings: cloud_url (option --cloud-url): address {url!r} is not HOST"
    )
    run = fails("edge", "run", "--source", str(frames), "--cloud-url", url)
    assert run.startswith(f"--cloud-url {url!r} is not HOST:PORT")


def test_an_unreachable_agent(frames: Path, closed_port: int) -> None:
    message = fails("edge", "run", "--source", str(frames), "--agent", f"127.0.0.1:{closed_port}")
    assert message.startswith(f"edge agent 127.0.0.1:{closed_port} is unreachable: ")


def test_a_missing_video_file(fashion_manifest: Manifest, tmp_path: Path) -> None:
    missing = tmp_path / "missing.avi"
    with EdgeProcess("fashion", None, tmp_path / "edge.log") as agent:
        message = fails(
            "edge", "run", "--source", str(missing), "--agent", agent.address, "--insecure",
            "--reconnect-timeout", "0.5",
        )  # fmt: skip
    assert message == f"cannot open {missing} (gave up after 0.5 s)"


def test_an_unknown_source_kind(frames: Path, closed_port: int) -> None:
    message = fails(
        "edge", "run", "--source", str(frames), "--kind", "nosuch",
        "--agent", f"127.0.0.1:{closed_port}",
    )  # fmt: skip
    assert message == "unknown source kind 'nosuch'; known: camera, url, folder, file"


def test_a_manifest_with_an_unknown_policy_kind(tmp_path: Path) -> None:
    folder = copy_family(tmp_path / "fashion")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["policy"]["kind"] = "nosuch"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    message = fails(
        "edge", "serve", "--insecure", "--allow-unsigned", "--family", "fashion", "--port", "0",
        artifacts=tmp_path,
    )  # fmt: skip
    assert "nosuch" in message and "max_prob" in message, message


def test_a_bad_option_is_named_by_its_flag() -> None:
    message = fails("edge", "serve", "--insecure", "--cloud-timeout", "0")
    assert message.startswith(
        "invalid edge agent settings: cloud_timeout_s (option --cloud-timeout)"
    )


def test_an_agent_without_tls_or_insecure(fashion_manifest: Manifest) -> None:
    message = fails("edge", "serve", "--family", "fashion", "--port", "0")
    assert "the agent has no TLS certificate and key" in message and "--insecure" in message


def test_an_unsigned_local_build_is_refused_unless_allowed(tmp_path: Path) -> None:
    folder = copy_family(tmp_path / "fashion")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.pop("signature", None)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    keys = artifacts_root() / "keys"
    args = ("edge", "serve", "--insecure", "--family", "fashion", "--port", "0")
    message = fails(*args, "--trusted-keys", str(keys), artifacts=tmp_path)
    assert message.startswith(f"{folder / 'manifest.json'}: manifest 'fashion' v")
    assert "is not signed" in message and "--allow-unsigned" in message
    message = fails(*args, artifacts=tmp_path)  # no key to trust under its artifacts root
    assert message.startswith(f"no trusted manifest signing key in {tmp_path / 'keys'}")


def test_nothing_built_and_no_modelsync_to_start_from(tmp_path: Path, closed_port: int) -> None:
    message = fails(
        "edge", "serve", "--insecure", "--cloud-insecure", "--allow-unsigned", "--port", "0",
        "--sync-url", f"127.0.0.1:{closed_port}", artifacts=tmp_path,
    )  # fmt: skip
    assert message.startswith(f"nothing to serve: 'fashion' is not built under {tmp_path}")
    assert f"ModelSync 127.0.0.1:{closed_port} (UNAVAILABLE: " in message


def test_a_missing_upstreams_file_names_the_command_that_creates_it(tmp_path: Path):
    missing = tmp_path / "upstreams.txt"
    message = fails("router", "serve", "--upstreams-file", str(missing), "--port", "0")
    assert str(missing) in message and "router upstreams add" in message
