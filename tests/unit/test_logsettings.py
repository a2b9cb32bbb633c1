"""Triton's log settings over Python's logging (no server)."""

import logging

import pytest

from edgecascade.cloud.common.errors import InvalidInput
from edgecascade.edge.serving import logsettings


@pytest.fixture(autouse=True)
def _keep_the_root_level():
    level = logging.getLogger().level
    yield
    logging.getLogger().setLevel(level)


def test_the_switches_set_the_lowest_enabled_level():
    logging.getLogger().setLevel(logging.INFO)
    assert logsettings.current() == {
        "log_file": "",
        "log_format": "default",
        "log_error": True,
        "log_warning": True,
        "log_info": True,
        "log_verbose_level": 0,
    }
    assert not logsettings.update({"log_info": False})["log_info"]
    assert logging.getLogger().level == logging.WARNING
    logsettings.update({"log_warning": False})
    assert logging.getLogger().level == logging.ERROR
    logsettings.update({"log_verbose_level": 1})
    assert logging.getLogger().level == logging.DEBUG
    assert logsettings.current()["log_info"] is True
    logsettings.update({"log_verbose_level": 0, "log_info": False})  # warnings stay on
    assert logging.getLogger().level == logging.WARNING
    off = dict.fromkeys(("log_error", "log_warning", "log_info"), False)
    logsettings.update({**off, "log_verbose_level": 0})
    assert logging.getLogger().level == logging.CRITICAL


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"log_file": "/tmp/x.log"}, "log_file cannot be changed"),
        ({"log_info": 1}, "log_info is true or false"),
        ({"log_verbose_level": True}, "whole number"),
        ({"log_colour": True}, "unknown log setting 'log_colour'"),
        ({"log_info": False, "log_format": "ISO8601"}, "log_format is one of default, json"),
    ],
)
def test_a_setting_that_cannot_apply_changes_nothing(settings, expected: str):
    logging.getLogger().setLevel(logging.INFO)
    with pytest.raises(InvalidInput, match=expected):
        logsettings.update(settings)
    assert logging.getLogger().level == logging.INFO
