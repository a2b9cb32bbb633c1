"""How an edge agent runs (EdgeSettings), from a TOML file, EDGECASCADE_* environment variables
and command-line options, later ones winning (cloud.common.settings); validated at start, every
problem named with where its value came from.

Security is on unless switched off explicitly: the agent's port needs a TLS certificate unless
`insecure`, its calls to the cloud and ModelSync use TLS unless `cloud_insecure`, and a manifest
must be signed by a trusted key unless `allow_unsigned`.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from edgecascade.cloud.common import settings, tracing
from edgecascade.cloud.common.logs import LogFormat, LogLevel
from edgecascade.cloud.common.paths import artifacts_root, keys_dir
from edgecascade.cloud.common.preprocessing import MAX_IMAGE_PIXELS
from edgecascade.cloud.common.serving import EventLoop, address_validator
from edgecascade.cloud.common.settings import ConfigError

__all__ = ["ConfigError", "EdgeSettings", "load_settings"]

PerformanceHint = Literal["LATENCY", "THROUGHPUT"]
PluginValue = bool | int | float | str  # an OpenVINO property's value, as JSON gives it


Address = Annotated[str, AfterValidator(address_validator("address"))]
OtlpEndpoint = Annotated[str, AfterValidator(tracing.check_endpoint)]


class EdgeSettings(BaseSettings):
    """How an edge agent runs; EDGECASCADE_<FIELD> environment variables apply."""

    model_config = SettingsConfigDict(env_prefix="EDGECASCADE_", extra="forbid")

    family: str = Field("fashion", description="model family to serve")
    artifacts: Path = Field(
        default_factory=artifacts_root, description="artifacts folder (builds, edge cache, keys)"
    )
    device: str = Field("CPU", description="OpenVINO device: CPU, GPU, AUTO, ...")
    hint: PerformanceHint = Field("LATENCY", description="OpenVINO performance hint")
    plugin_config: Annotated[dict[str, PluginValue], NoDecode] = Field(
        default_factory=dict,
        description="OpenVINO properties for compile_model, as JSON (OVMS's plugin_config), "
        'e.g. \'{"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 2}\'; they win over hint',
    )
    nireq: int = Field(
        0,
        ge=0,
        description="infer requests in the OpenVINO queue (OVMS's nireq); 0: "
        "OpenVINO's optimal number for the compiled model",
    )
    event_loop: EventLoop = Field(
        "auto",
        description="the agent's event loop: uvloop (libuv; auto: where installed) or asyncio",
    )
    workers: int = Field(
        1,
        ge=1,
        description="agent processes sharing the gRPC and REST ports (SO_REUSEPORT among "
        "them only), each with its own model; worker i serves /metrics on metrics_port + i",
    )
    precision: Literal["int8", "fp32"] = Field(
        "int8", description="edge IR: int8, or the fp32 reference"
    )
    cloud_url: Address | None = Field(
        None, description="host:port of Triton or a router gateway; none: edge only"
    )
    sync_url: Address | None = Field(
        None, description="host:port of a ModelSync service (the router gateway): follow updates"
    )
    cloud_timeout_s: float = Field(1.0, gt=0, description="seconds allowed for one cloud call")
    breaker_failures: int = Field(
        5, ge=1, description="cloud failures in a row that open the breaker"
    )
    breaker_cooldown_s: float = Field(
        0.5, ge=0, description="seconds an open breaker waits before it probes the cloud"
    )
    threshold: float | None = Field(
        None, ge=0, le=1, description="escalation threshold; none: the manifest's"
    )
    # The family's escalation budget, the audit of confident answers, the examples collected.
    escalations_per_second: float | None = Field(
        None,
        gt=0,
        description="escalations and audits sent to the cloud per second at most "
        "(token bucket); more: degraded `budget`; none: no ceiling",
    )
    escalation_burst: float | None = Field(
        None,
        ge=1,
        description="escalations at once the per-second bucket holds; none: "
        "max(1, escalations_per_second)",
    )
    escalations_per_day: int | None = Field(
        None, ge=1, description="escalations and audits per UTC day at most; none: no ceiling"
    )
    audit_rate: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of confident edge answers also sent to the cloud in "
        "the background, e.g. 0.01; 0: no audit",
    )
    audit_min_agreement: float = Field(
        0.8,
        ge=0,
        le=1,
        description="audited agreement with the cloud below which a warning "
        "is logged and shown (when the 95% interval lies below it)",
    )
    collect: bool = Field(
        True,
        description="keep escalated and audited inputs with the cloud's answers (and "
        "upload them to sync_url); false: keep nothing",
    )
    examples_file: Path | None = Field(
        None,
        description="SQLite file of the collected examples; none: "
        "<artifacts>/edge-examples/<family>.sqlite",
    )
    examples_max_bytes: int = Field(
        256 << 20, ge=4096, description="size cap of the collected examples (oldest dropped)"
    )
    upload_interval_s: float = Field(
        60.0, gt=0, description="seconds between uploads of collected examples to sync_url"
    )
    edge_id: str = Field(
        default_factory=socket.gethostname,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$",
        description="this edge's name on the cloud side (examples are kept per edge); "
        "default: the host name",
    )
    host: str = Field("127.0.0.1", min_length=1, description="address to listen on")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0: a free one")
    default_top_k: int = Field(5, ge=1, description="classes per answer when a request sets none")
    stream_window: int = Field(8, ge=1, description="frames of one stream in flight at once")
    max_in_flight: int = Field(
        64, ge=1, description="requests answered at once; more get RESOURCE_EXHAUSTED"
    )
    max_batch: int = Field(
        32, ge=1, description="images in one KServe ModelInfer request and in one dynamic batch"
    )
    # Dynamic batching (Triton's dynamic_batching): requests queued together share an edge
    # inference and a cloud call; a batch frees its instance before its cloud call.
    dynamic_batching: bool = Field(
        True, description="batch requests and stream frames queued together (Triton's batcher)"
    )
    max_queue_delay_us: int = Field(
        0,
        ge=0,
        description="microseconds a request may wait for others to join its batch; 0: only "
        "those queued at once",
    )
    preferred_batch_sizes: Annotated[list[int], NoDecode] = Field(
        default_factory=list,
        description="batch sizes (images) started as soon as the queue makes one, without "
        "waiting out the delay",
    )
    batch_instances: int = Field(
        2,
        ge=1,
        description="batches run at once (Triton's instance count; an escalated batch holds "
        "one through its cloud call); requests arriving meanwhile wait and join the next",
    )
    max_message_bytes: int = Field(16 << 20, ge=1024, description="largest gRPC message either way")
    grace_s: float = Field(5.0, ge=0, description="seconds in-flight calls get on shutdown")
    http_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="KServe v2 HTTP/REST port (Triton's 8000, OVMS's --rest_port), with the "
        "gRPC port's TLS and caller check; 0: off",
    )
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Prometheus /metrics HTTP port (Triton's 8002); 0: off"
    )
    fold_preprocessing: bool = Field(
        True, description="crop and resize frames inside the edge model (OpenVINO), not in cv2"
    )
    max_image_pixels: int = Field(
        MAX_IMAGE_PIXELS,
        ge=1,
        description="largest image (height x width, from its header, or once resized) answered; "
        "more: INVALID_ARGUMENT",
    )
    # The agent's own port.
    insecure: bool = Field(
        False, description="serve plaintext, without TLS (development on a trusted network only)"
    )
    tls_cert: Path | None = Field(
        None,
        validate_default=True,
        description="the agent's TLS certificate (PEM; `edgecascade certs issue`)",
    )
    tls_key: Path | None = Field(
        None, validate_default=True, description="the private key of tls_cert (PEM)"
    )
    tls_ca: Path | None = Field(None, description="CA (PEM) whose client certificates are accepted")
    require_client_cert: bool = Field(
        False, description="mutual TLS: refuse clients without a certificate signed by tls_ca"
    )
    callers: Path | None = Field(
        None,
        description="caller file (`edgecascade auth add-token`): every call needs a known token "
        "or client certificate with the method's scope; none: no caller check",
    )
    # The agent's calls to the cloud (cloud_url) and to ModelSync (sync_url).
    cloud_insecure: bool = Field(
        False, description="call the cloud and ModelSync in plaintext, without TLS"
    )
    cloud_ca: Path | None = Field(
        None, description="CA (PEM) that signs the cloud's certificates; none: the system's"
    )
    cloud_cert: Path | None = Field(
        None, description="client certificate (PEM) shown to the cloud (mutual TLS)"
    )
    cloud_key: Path | None = Field(
        None, validate_default=True, description="the private key of cloud_cert (PEM)"
    )
    cloud_token_file: Path | None = Field(
        None, description="file holding the bearer token sent to the cloud and ModelSync"
    )
    # Which manifests the agent serves.
    trusted_keys: Annotated[list[Path] | None, NoDecode] = Field(
        None,
        description="Ed25519 public keys (files, or folders of *.ed25519.pub) whose signed "
        "manifests are served; repeat for rotation; none: <artifacts>/keys",
    )
    allow_unsigned: bool = Field(
        False, description="serve manifests without a trusted signature (development builds)"
    )
    # What the agent tells its operators.
    log_format: LogFormat = Field("default", description="log lines: default (text) or json")
    log_level: LogLevel = Field("info", description="lowest level logged")
    otlp_endpoint: OtlpEndpoint | None = Field(
        None,
        description="export traces over OTLP/HTTP to this collector (http://host:4318); none: "
        "OTEL_EXPORTER_OTLP_ENDPOINT, else no export",
    )
    trace_ratio: float = Field(
        1.0,
        ge=0,
        le=1,
        description="share of requests traced when the caller sent no trace context (a "
        "caller's sampling decision is kept)",
    )

    @field_validator("trusted_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        """The environment gives one string: `path,path`."""
        return [part.strip() for part in value.split(",")] if isinstance(value, str) else value

    @field_validator("plugin_config", mode="before")
    @classmethod
    def _parse_plugin_config(cls, value: Any) -> Any:
        """The command line and the environment give JSON text; TOML gives a table."""
        if not isinstance(value, str):
            return value
        try:
            parsed = json.loads(value)
        except ValueError as e:
            example = '{"NUM_STREAMS": 2}'
            raise ValueError(f"not JSON ({e}): give an object, e.g. '{example}'") from None
        if not isinstance(parsed, dict):
            raise ValueError(f"give a JSON object of OpenVINO properties, not {value!r}")
        return parsed

    @field_validator("preferred_batch_sizes", mode="before")
    @classmethod
    def _split_sizes(cls, value: Any) -> Any:
        """The environment gives one string: `4,8`."""
        return [part.strip() for part in value.split(",")] if isinstance(value, str) else value

    @field_validator("preferred_batch_sizes", mode="after")
    @classmethod
    def _positive_sizes(cls, value: list[int]) -> list[int]:
        if any(size < 1 for size in value):
            raise ValueError(f"preferred batch sizes are images, 1 or more: got {value}")
        return value

    @field_validator("tls_cert", "tls_key", mode="after")
    @classmethod
    def _server_tls(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if info.data.get("insecure"):
            if value is not None:
                raise ValueError("insecure serves plaintext: leave tls_cert and tls_key unset")
        elif info.field_name == "tls_cert" and value is None:
            raise ValueError(
                "the agent has no TLS certificate and key: set tls_cert and tls_key "
                "(--tls-cert, --tls-key; see `edgecascade certs issue`), or insecure "
                "(--insecure) to serve plaintext"
            )
        elif info.field_name == "tls_key" and value is None and info.data.get("tls_cert"):
            raise ValueError("tls_cert needs its key: set tls_key (--tls-key)")
        return value

    @field_validator("require_client_cert", mode="after")
    @classmethod
    def _client_ca(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("tls_ca") is None:
            raise ValueError("mutual TLS needs tls_ca (--tls-ca), the CA of client certificates")
        return value

    @field_validator("cloud_ca", "cloud_cert", "cloud_key", mode="after")
    @classmethod
    def _cloud_tls(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and info.data.get("cloud_insecure"):
            raise ValueError("cloud_insecure calls in plaintext: leave cloud_ca/cert/key unset")
        if info.field_name == "cloud_key" and (value is None) != (
            info.data.get("cloud_cert") is None
        ):
            raise ValueError("cloud_cert and cloud_key go together: set both or neither")
        return value

    @property
    def trusted_key_paths(self) -> list[Path]:
        return self.trusted_keys or [keys_dir(self.artifacts)]


def load_settings(
    config: Path | None = None,
    options: dict[str, Any] | None = None,
    flags: dict[str, str] | None = None,
) -> EdgeSettings:
    """EdgeSettings from `config` (TOML, keys as fields), overridden by EDGECASCADE_* environment
    variables, overridden by `options` (field: value; None values are ignored; `flags` names the
    option of each field); ConfigError names each bad setting and where its value came from."""
    return settings.load_settings(EdgeSettings, "edge agent settings", config, options, flags)
