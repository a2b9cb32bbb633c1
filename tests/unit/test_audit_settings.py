"""The budget, audit and collection settings: a wrong value on the command line is one
`error:` line naming the option, exit code 2, before anything starts."""

from __future__ import annotations

import subprocess

import pytest

from edgecascade.cloud.common.launcher import edgecascade_command


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--escalations-per-second", "0"),
        ("--escalations-per-day", "-1"),
        ("--escalation-burst", "0.5"),
        ("--audit-rate", "2"),
        ("--audit-min-agreement", "-0.1"),
        ("--examples-max-bytes", "10"),
        ("--upload-interval", "0"),
        ("--edge-id", "../x"),
    ],
)
def test_a_wrong_setting_is_one_error_line_naming_the_option(option: str, value: str) -> None:
    done = subprocess.run(
        edgecascade_command("edge", "serve", "--insecure", option, value),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and f"(option {option})" in lines[0]
