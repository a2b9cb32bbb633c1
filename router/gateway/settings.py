"""How a router gateway runs: from a TOML file (`--config`), EDGECASCADE_GATEWAY_* environment
variables and `edgecascade router serve` options, later ones winning; validated at start
(cloud.common.settings names each bad value and where it came from)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from edgecascade.cloud.common import settings
from edgecascade.cloud.common.logs import LogFormat, LogLevel
from edgecascade.cloud.common.serving import address_validator

Upstream = Annotated[str, AfterValidator(address_validator("upstream"))]
DnsServer = Annotated[str, AfterValidator(address_validator("dns_server"))]


class GatewaySettings(BaseSettings):
    """The gateway's settings; EDGECASCADE_GATEWAY_<FIELD> environment variables apply."""

    model_config = SettingsConfigDict(env_prefix="EDGECASCADE_GATEWAY_", extra="forbid")

    upstreams_file: Path | None = Field(
        None,
        description="also follow the Triton endpoints in this file (one host:port a line; "
        "edgecascade router upstreams add|remove edits it): they join and leave without a restart",
    )
    discover: str | None = Field(
        None,
        min_length=1,
        description="also follow the Triton endpoints of this DNS SRV name, re-resolved every "
        "probe interval (a headless Service: _grpc._tcp.<service>.<namespace>.svc.cluster.local)",
    )
    dns_server: DnsServer | None = Field(
        None,
        description="host:port of the DNS server asked for --discover (default: resolv.conf's)",
    )
    upstream: Annotated[list[Upstream], NoDecode] = Field(
        [],
        validate_default=True,
        description="Triton host:port (repeat for a cluster; comma-separated in the environment); "
        "names are re-resolved while serving, so give fully qualified ones",
    )
    host: str = Field("127.0.0.1", min_length=1, description="address to listen on")
    port: int = Field(8001, ge=0, le=65535, description="KServe v2 gRPC port; 0: a free one")
    http_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="also serve KServe v2 over HTTP/REST on this port (Triton's 8000), with the "
        "gRPC port's TLS and callers, each call forwarded as gRPC; 0: off",
    )
    probe_interval_s: float = Field(
        0.5, gt=0, description="seconds between health checks of each endpoint"
    )
    registry: Path | None = Field(
        None, description="also serve ModelSync for this model registry folder"
    )
    examples_quota_bytes: int = Field(
        1 << 30,
        ge=1,
        description="bytes of uploaded examples kept per edge (ModelSync UploadExamples, under "
        "<registry>/examples); more: RESOURCE_EXHAUSTED",
    )
    health_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="also serve plaintext gRPC health (SERVING while a Triton is ready) on this "
        "port, for probes that cannot speak TLS (kubelet); 0: off",
    )
    metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="serve Prometheus /metrics on this port (HAProxy's, and calls by gRPC method "
        "and status); 0: off",
    )
    grace_s: int = Field(  # whole seconds: HAProxy's hard-stop-after is rendered in seconds
        5, ge=0, description="seconds in-flight calls get on shutdown"
    )
    tls_cert: Path | None = Field(None, description="serve TLS to edges: certificate (PEM)")
    tls_key: Path | None = Field(
        None, validate_default=True, description="serve TLS to edges: its private key"
    )
    tls_ca: Path | None = Field(
        None, description="CA of the edges' client certificates (mutual TLS, when they send one)"
    )
    require_client_cert: bool = Field(
        False, description="refuse every edge without a client certificate from tls_ca"
    )
    callers: Path | None = Field(
        None,
        description="caller file (edgecascade auth add-token): every call but health needs a "
        "caller with its method's scope; unset: anyone may infer, no one may control models",
    )
    triton_ca: Path | None = Field(
        None, description="speak TLS to Triton, verifying its certificate against this CA"
    )
    triton_cert: Path | None = Field(
        None, description="client certificate shown to Triton (its mutual TLS)"
    )
    triton_key: Path | None = Field(
        None, validate_default=True, description="private key of triton_cert"
    )
    triton_server_name: str | None = Field(
        None, description="name Triton's certificate must carry (default: not checked)"
    )
    triton_admin_key_file: Path | None = Field(
        None,
        description="file with Triton's restricted-protocol key, added to admin callers' "
        "model-control calls only",
    )
    log_format: LogFormat = Field(
        "default", description="log lines (the gateway's and HAProxy's): default (text) or json"
    )
    log_level: LogLevel = Field("info", description="lowest level the gateway logs")
    access_log: bool = Field(
        False,
        description="HAProxy logs one line per request (method, status, time, server) with the "
        "trace id of its W3C traceparent",
    )

    @field_validator("upstream", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        """The environment gives one string: `host:port,host:port`."""
        return [part.strip() for part in value.split(",")] if isinstance(value, str) else value

    @field_validator("upstream")
    @classmethod
    def _some_triton(cls, value: list[str], info: ValidationInfo) -> list[str]:
        """upstream comes after the other sources of endpoints: one of them is needed."""
        if not (value or info.data.get("upstreams_file") or info.data.get("discover")):
            raise ValueError(
                "no Triton endpoint: give --upstream (EDGECASCADE_GATEWAY_UPSTREAM), "
                "--upstreams-file or --discover"
            )
        return value

    @field_validator(
        "dns_server",
        "tls_key",
        "tls_ca",
        "require_client_cert",
        "triton_cert",
        "triton_key",
        "triton_server_name",
        "triton_admin_key_file",
    )
    @classmethod
    def _security(cls, value: Any, info: ValidationInfo) -> Any:
        """Settings that need others, checked as each is validated (fields in order)."""
        given = {k: v for k, v in info.data.items() if v not in (None, False)}
        needs = {
            "dns_server": ("discover", "dns_server is the server asked for --discover: set both"),
            "tls_key": ("tls_cert", "tls_cert and tls_key go together: set both or neither"),
            "tls_ca": ("tls_cert", "tls_ca needs tls_cert and tls_key"),
            "require_client_cert": ("tls_ca", "require_client_cert needs tls_ca (their CA)"),
            "triton_cert": ("triton_ca", "triton_cert needs triton_ca"),
            "triton_key": ("triton_cert", "triton_cert and triton_key go together: set both"),
            "triton_server_name": ("triton_ca", "triton_server_name needs triton_ca"),
            "triton_admin_key_file": ("callers", "triton_admin_key_file needs callers"),
        }
        field = str(info.field_name)
        needed, message = needs[field]
        missing_needed = value not in (None, False) and needed not in given
        if missing_needed or (field.endswith("_key") and value is None and needed in given):
            raise ValueError(message)
        return value


def load_gateway_settings(
    config: Path | None = None,
    options: dict[str, Any] | None = None,
    flags: dict[str, str] | None = None,
) -> GatewaySettings:
    """GatewaySettings from `config`, the environment and `options` (field: value, None
    ignored; `flags` names the option of each field); ConfigError says what is wrong where."""
    return settings.load_settings(GatewaySettings, "gateway settings", config, options, flags)
