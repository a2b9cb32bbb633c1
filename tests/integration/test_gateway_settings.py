"""`edgecascade router serve` with a bad setting says which and where in one line, exit 2."""

import subprocess
from pathlib import Path

import pytest

from edgecascade.cloud.common.launcher import edgecascade_command

pytestmark = pytest.mark.integration


def test_a_bad_config_file_is_one_line_naming_the_setting_and_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('upstream = ["127.0.0.1:8001"]\nprobe_interval_s = -1\n')
    result = subprocess.run(
        edgecascade_command("router", "serve", "--config", str(bad)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"error: invalid gateway settings: probe_interval_s (config file "
        f"{bad}): Input should be greater than 0, got -1"
    ]
