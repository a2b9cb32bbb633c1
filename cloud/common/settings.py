"""Settings from a TOML file, the environment and command-line options (later ones win),
validated at start with errors that say which setting is wrong and where its value came from.

A component's settings are a pydantic-settings class with an `env_prefix`; each field's
description is the help of the command-line option that sets it."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, EnvSettingsSource, TomlConfigSettingsSource

from edgecascade.cloud.common.errors import UserError

S = TypeVar("S", bound=BaseSettings)


class ConfigError(UserError, ValueError):
    """The configuration cannot be used; the message has one line per problem."""


def read_config_file(cls: type[BaseSettings], path: Path) -> dict[str, Any]:
    """The settings in TOML file `path`, keys as `cls` fields; ConfigError if it cannot be read."""
    if not Path(path).is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        return TomlConfigSettingsSource(cls, toml_file=path)()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None


def option_help(cls: type[BaseSettings], name: str) -> str:
    """Help for the option that sets field `name`: its description and, when it has one, its
    default (from the settings class, so help and behaviour cannot disagree)."""
    field = cls.model_fields[name]
    text = field.description or name.replace("_", " ")
    if field.is_required():
        return f"{text} (required)"
    default = field.get_default(call_default_factory=True)
    return text if default is None else f"{text} (default {default})"


def command_options(ctx: typer.Context) -> tuple[dict[str, Any], dict[str, str]]:
    """The options given to a command whose parameters are named after settings fields: their
    values by field (options left out are None or empty) and the flag that set each."""
    flags = {p.name: p.opts[0] for p in ctx.command.params if p.name}
    given = {name: value for name, value in ctx.params.items() if value not in (None, ())}
    return given, {name: flags[name] for name in given}


def load_settings(
    cls: type[S],
    what: str,
    config: Path | None = None,
    options: Mapping[str, Any] | None = None,
    flags: Mapping[str, str] | None = None,
) -> S:
    """`cls` from `config` (TOML), overridden by its environment variables (env_prefix + FIELD),
    overridden by `options` (field: value; None values are ignored). ConfigError names `what`
    and, for each problem, the setting and its origin: the file, the variable, or the option
    (`flags` maps a field to its flag; default --field-name)."""
    file_values = read_config_file(cls, config) if config else {}
    env_values = EnvSettingsSource(cls)()
    given = {key: value for key, value in (options or {}).items() if value is not None}
    prefix = str(cls.model_config.get("env_prefix", ""))
    fields = {*cls.model_fields, *given}
    flag = {key: (flags or {}).get(key, f"--{key.replace('_', '-')}") for key in fields}
    variable = {key: (prefix + key).upper() for key in fields}
    origin = {
        **{key: f"config file {config}" for key in file_values},
        **{key: f"environment {variable[key]}" for key in env_values},
        **{key: f"option {flag[key]}" for key in given},
    }
    try:
        return cls(**{**file_values, **env_values, **given})
    except ValidationError as e:
        problems = (_problem(cls, err, origin, flag, variable) for err in e.errors())
        raise ConfigError("\n".join(f"invalid {what}: {problem}" for problem in problems)) from None


def _problem(
    cls: type[BaseSettings],
    error: ErrorDetails,
    origin: Mapping[str, str],
    flag: Mapping[str, str],
    variable: Mapping[str, str],
) -> str:
    key = ".".join(map(str, error["loc"]))
    field = str(error["loc"][0])
    if error["type"] == "missing":
        where = f"{flag[field]}, {variable[field]} or `{field}` in the config file"
        return f"{key} is not set: give {where}"
    where = origin.get(field, "default")
    if error["type"] == "extra_forbidden":
        return f"{key} ({where}): unknown setting; known: {', '.join(cls.model_fields)}"
    if error["type"] == "value_error":  # a validator's own message, which names the value
        return f"{key} ({where}): {error['ctx']['error']}"
    return f"{key} ({where}): {error['msg']}, got {error['input']!r}"
