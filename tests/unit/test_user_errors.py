"""The checks behind the CLI's `error: ...` lines: addresses, OpenVINO devices, families, and
the one place that turns a user's mistake into exit code 2."""

import asyncio
import sys
from pathlib import Path

import pytest
import uvloop

from edgecascade.cloud.common.errors import UserError
from edgecascade.cloud.common.serving import check_address, event_loop_runner, user_errors
from edgecascade.cloud.common.transport import PortInUse
from edgecascade.edge.serving.runtime import check_device
from edgecascade.edge.tools.families import built_family, known_family


@pytest.mark.parametrize("address", ["triton:8001", "127.0.0.1:1", "[::1]:65535", "a-b.c_d:80"])
def test_host_port_addresses_pass(address: str) -> None:
    assert check_address("--cloud-url", address) == address


@pytest.mark.parametrize(
    "address",
    ["http://x:1/a", "host:notaport", "::::", "::1:8001", "host:", ":80", "a b:1", "x@y:1", "h:٣"],
)
def test_anything_else_is_a_user_error_naming_the_option(address: str) -> None:
    with pytest.raises(UserError, match=r"^--cloud-url .* is not HOST:PORT"):
        check_address("--cloud-url", address)


@pytest.mark.parametrize("port", ["0", "65536"])
def test_a_port_out_of_range_is_a_user_error(port: str) -> None:
    with pytest.raises(UserError, match=f"port {port} is not between 1 and 65535"):
        check_address("--agent", f"host:{port}")


@pytest.mark.parametrize(
    "device", ["CPU", "GPU", "GPU.1", "AUTO", "AUTO:GPU,CPU", "AUTO:-CPU", "BATCH:GPU(4)"]
)
def test_devices_openvino_has_pass(device: str) -> None:
    check_device(device, ["CPU", "GPU.0", "GPU.1"])


@pytest.mark.parametrize(
    ("device", "available", "missing"),
    [
        ("GPU", ["CPU"], "GPU"),
        ("GPU.1", ["CPU", "GPU.0"], "GPU.1"),
        ("AUTO:GPU,CPU", ["CPU"], "GPU"),
        ("MULTI:CPU,NPU", ["CPU"], "NPU"),
    ],
)
def test_a_device_without_a_driver_says_which_devices_there_are(
    device: str, available: list[str], missing: str
) -> None:
    with pytest.raises(UserError) as error:
        check_device(device, available)
    assert str(error.value) == (
        f"OpenVINO device {device!r}: no {missing} (or no driver for it) on this machine; "
        f"available: {', '.join(available)}"
    )


def test_families_unknown_or_not_built(tmp_path: Path) -> None:
    assert known_family("fashion") == "fashion"
    with pytest.raises(UserError, match="unknown family 'nosuch'; known: fashion, imagenet"):
        built_family("nosuch", tmp_path)
    with pytest.raises(UserError, match=f"'fashion' is not built under {tmp_path}: run"):
        built_family("fashion", tmp_path)
    (tmp_path / "fashion").mkdir()
    (tmp_path / "fashion" / "manifest.json").write_text("{}")
    assert built_family("fashion", tmp_path) == tmp_path / "fashion" / "manifest.json"


@pytest.mark.parametrize("mistake", [UserError("bad --thing"), PortInUse("port 1 is in use")])
def test_a_mistake_is_one_error_line_and_exit_code_2(
    mistake: Exception, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done, user_errors():
        raise mistake
    assert done.value.code == 2
    assert capsys.readouterr().err == f"error: {mistake}\n"


def test_other_exceptions_are_not_taken_for_mistakes() -> None:
    with pytest.raises(KeyError), user_errors():
        raise KeyError("a bug")


def test_the_event_loop_is_uvloop_where_installed_and_asyncio_when_asked(monkeypatch) -> None:
    assert event_loop_runner("auto") is uvloop.run is event_loop_runner("uvloop")
    assert event_loop_runner("asyncio") is asyncio.run
    monkeypatch.setitem(sys.modules, "uvloop", None)  # not installed: import fails
    assert event_loop_runner("auto") is asyncio.run
    with pytest.raises(UserError, match="uvloop is not installed"):
        event_loop_runner("uvloop")
