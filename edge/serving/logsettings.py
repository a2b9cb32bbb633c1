"""Triton's log settings (KServe LogSettings, `tritonclient`'s get/update_log_settings) over
Python's logging: `log_info`, `log_warning`, `log_error` and `log_verbose_level` are read from
and set on the root logger's level (the lowest enabled one wins); `log_format` switches the agent's
lines between "default" text and "json" (cloud/common/logs.py); `log_file` (stderr) is shown,
not changed."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from edgecascade.cloud.common import logs
from edgecascade.cloud.common.errors import InvalidInput

Setting = bool | int | str
SWITCHES = {"log_error": logging.ERROR, "log_warning": logging.WARNING, "log_info": logging.INFO}
FIXED = {"log_file": ""}


def current() -> dict[str, Setting]:
    level = logging.getLogger().getEffectiveLevel()
    return {
        **FIXED,
        "log_format": logs.current_format(),
        **{name: level <= threshold for name, threshold in SWITCHES.items()},
        "log_verbose_level": int(level <= logging.DEBUG),
    }


def update(settings: Mapping[str, Setting]) -> dict[str, Setting]:
    """Apply `settings` (Triton's names), then return them all; InvalidInput names a setting
    that is unknown, of the wrong type or not changeable here, and nothing is changed."""
    wanted = {**current(), **settings}
    for name, value in settings.items():
        if name in FIXED:
            if value != FIXED[name]:
                raise InvalidInput(
                    f"{name} cannot be changed on an edge agent (it is {FIXED[name]!r})"
                )
        elif name == "log_format":
            if value not in logs.FORMATS:
                raise InvalidInput(f"log_format is one of {', '.join(logs.FORMATS)}, got {value!r}")
        elif name in SWITCHES:
            if not isinstance(value, bool):
                raise InvalidInput(f"{name} is true or false, got {value!r}")
        elif name == "log_verbose_level":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidInput(f"log_verbose_level is a whole number >= 0, got {value!r}")
        else:
            known = [*FIXED, "log_format", *SWITCHES, "log_verbose_level"]
            raise InvalidInput(f"unknown log setting {name!r}: the agent has {known}")
    enabled = [level for name, level in SWITCHES.items() if wanted[name]]
    level = logging.DEBUG if wanted["log_verbose_level"] else min(enabled, default=logging.CRITICAL)
    logging.getLogger().setLevel(level)
    if wanted["log_format"] != logs.current_format():
        logs.set_format(str(wanted["log_format"]))
    return current()
