"""The agent's configuration (EdgeSettings) from a TOML file, EDGECASCADE_* environment variables
and command-line options, later ones winning (cloud.common.settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgecascade.cloud.common import settings
from edgecascade.cloud.common.settings import ConfigError
from edgecascade.edge.serving.agent import EdgeSettings

__all__ = ["ConfigError", "load_settings"]


def load_settings(config: Path | None = None, **options: Any) -> EdgeSettings:
    """Settings from `config` (TOML, keys as EdgeSettings fields), overridden by EDGECASCADE_*
    environment variables, overridden by `options` (None values are ignored); ConfigError
    names each bad setting and where its value came from."""
    return settings.load_settings(EdgeSettings, "edge agent settings", config, options)
