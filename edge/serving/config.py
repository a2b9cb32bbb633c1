"""The agent's configuration from a TOML file, the environment and command-line options
(later ones win), validated at start with errors that say which setting and where it came from."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import EnvSettingsSource

from edgecascade.edge.serving.agent import EdgeSettings


class ConfigError(ValueError):
    """The configuration cannot be used; the message lists every problem."""


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None


def load_settings(config: Path | None = None, **options: Any) -> EdgeSettings:
    """Settings from `config` (TOML, keys as EdgeSettings fields), overridden by EDGECASCADE_*
    environment variables, overridden by `options` (None values are ignored)."""
    file_values = read_config_file(config) if config else {}
    env_values = EnvSettingsSource(EdgeSettings)()
    options = {k: v for k, v in options.items() if v is not None}
    origin = {
        **{key: f"config file {config}" for key in file_values},
        **{key: f"environment EDGECASCADE_{key.upper()}" for key in env_values},
        **{key: f"option --{key.replace('_', '-')}" for key in options},
    }
    try:
        return EdgeSettings(**{**file_values, **env_values, **options})
    except ValidationError as e:
        raise ConfigError(
            "invalid edge agent configuration:\n"
            + "\n".join(_problem(err, origin) for err in e.errors())
        ) from None


def _problem(error: Any, origin: dict[str, str]) -> str:
    key = ".".join(map(str, error["loc"]))
    where = origin.get(str(error["loc"][0]), "default")
    if error["type"] == "extra_forbidden":
        return f"  {key} ({where}): unknown setting; known: {', '.join(EdgeSettings.model_fields)}"
    return f"  {key} ({where}): {error['msg']}, got {error['input']!r}"
