"""The edge agent's state: its family's manifest, the compiled edge model, the cascade."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, Field

from cloud.manifest import Manifest
from cloud.paths import artifacts_root, edge_model_file, family_dir
from edge.runtime import EdgeModel, PerformanceHint
from router.cascade import Answer, Cascade
from router.cloud_client import CloudClient
from router.policy import policy_from_manifest


class EdgeSettings(BaseModel):
    """How an edge agent runs; validated at start."""

    family: str = "fashion"
    artifacts: Path = Field(default_factory=artifacts_root)
    device: str = "CPU"
    hint: PerformanceHint = "LATENCY"
    cloud_url: str | None = Field(None, description="host:port of Triton or a router gateway")
    cloud_timeout_s: float = Field(1.0, gt=0)
    threshold: float | None = Field(None, ge=0, le=1, description="overrides the manifest's")
    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535)
    default_top_k: int = Field(5, ge=1)
    stream_window: int = Field(8, ge=1, description="frames of one stream in flight at once")


@dataclass
class Counters:
    requests: int = 0
    escalations: int = 0
    degraded: int = 0
    errors: int = 0
    bytes_to_cloud: int = 0

    def record(self, answer: Answer) -> None:
        self.requests += 1
        self.escalations += answer.tier == "cloud" or answer.degraded
        self.degraded += answer.degraded
        self.bytes_to_cloud += answer.bytes_to_cloud


@dataclass
class EdgeAgent:
    settings: EdgeSettings
    manifest: Manifest
    model: EdgeModel
    cascade: Cascade
    cloud: CloudClient | None
    counters: Counters = field(default_factory=Counters)

    @classmethod
    def load(cls, settings: EdgeSettings) -> "EdgeAgent":
        """Verify the family's artifacts against its manifest and compile the edge model.
        Call inside the event loop that will serve (the cloud client binds to it)."""
        folder = family_dir(settings.family, settings.artifacts)
        manifest_file = folder / "manifest.json"
        if not manifest_file.exists():
            raise FileNotFoundError(
                f"no manifest for family {settings.family!r} in {folder}: "
                f"run `edgecascade models build --family {settings.family}`"
            )
        manifest = Manifest.load(manifest_file)
        manifest.verify(folder)
        model = EdgeModel(edge_model_file(folder), settings.device, settings.hint)
        cloud = CloudClient(settings.cloud_url, manifest.cloud) if settings.cloud_url else None
        policy = policy_from_manifest(manifest.policy, settings.threshold)
        cascade = Cascade(manifest, model.infer, policy, cloud, settings.cloud_timeout_s)
        return cls(settings, manifest, model, cascade, cloud)
