"""How a router gateway runs: from a TOML file (`--config`), EDGECASCADE_GATEWAY_* environment
variables and `edgecascade router serve` options, later ones winning; validated at start
(cloud.common.settings names each bad value and where it came from)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from edgecascade.cloud.common import settings
from edgecascade.cloud.common.errors import UserError
from edgecascade.cloud.common.serving import check_address


def _upstream(address: str) -> str:
    """`address` if it is HOST:PORT; else a ValueError, which pydantic reports with its origin."""
    try:
        return check_address("upstream", address)
    except UserError as e:
        raise ValueError(str(e)) from None


Upstream = Annotated[str, AfterValidator(_upstream)]


class GatewaySettings(BaseSettings):
    """The gateway's settings; EDGECASCADE_GATEWAY_<FIELD> environment variables apply."""

    model_config = SettingsConfigDict(env_prefix="EDGECASCADE_GATEWAY_", extra="forbid")

    upstream: Annotated[list[Upstream], NoDecode] = Field(
        min_length=1,
        description="Triton host:port (repeat for a cluster; comma-separated in the environment); "
        "names are re-resolved while serving, so give fully qualified ones",
    )
    host: str = Field("127.0.0.1", min_length=1, description="address to listen on")
    port: int = Field(8001, ge=0, le=65535, description="KServe v2 gRPC port; 0: a free one")
    probe_interval_s: float = Field(
        0.5, gt=0, description="seconds between health checks of each endpoint"
    )
    registry: Path | None = Field(
        None, description="also serve ModelSync for this model registry folder"
    )
    metrics_port: int = Field(
        0, ge=0, le=65535, description="serve Prometheus metrics (HAProxy's) on this port; 0: off"
    )
    grace_s: int = Field(  # whole seconds: HAProxy's hard-stop-after is rendered in seconds
        5, ge=0, description="seconds in-flight calls get on shutdown"
    )

    @field_validator("upstream", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        """The environment gives one string: `host:port,host:port`."""
        return [part.strip() for part in value.split(",")] if isinstance(value, str) else value


def load_gateway_settings(
    config: Path | None = None,
    options: dict[str, Any] | None = None,
    flags: dict[str, str] | None = None,
) -> GatewaySettings:
    """GatewaySettings from `config`, the environment and `options` (field: value, None
    ignored; `flags` names the option of each field); ConfigError says what is wrong where."""
    return settings.load_settings(GatewaySettings, "gateway settings", config, options, flags)
