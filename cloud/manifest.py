"""The manifest that pins an edge model and a cloud model together (content-addressed)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

# Every model of every family takes uint8 NHWC images (normalisation lives in the graph)
# and returns float32 logits [N, classes].
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
# The Triton model-config parameter that carries the sha256 of the label map a model serves.
LABELS_PARAMETER = "labels_sha256"


class Preprocessing(BaseModel):
    """Geometry and colour of a model's input; pixel normalisation is inside the model."""

    color: Literal["gray", "rgb"]
    size: int = Field(gt=0, description="output height and width")
    resize_short: int = Field(gt=0, description="short side before the centre crop")

    @property
    def shape(self) -> tuple[int, int, int]:
        """The prepared image: [size, size, channels]."""
        return (self.size, self.size, 1 if self.color == "gray" else 3)


class ModelSpec(BaseModel):
    name: str
    version: int = Field(ge=1)
    precision: str
    files: dict[str, str] = Field(description="path relative to the family folder -> sha256")
    preprocessing: Preprocessing
    metrics: dict[str, float] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def input_shape(self) -> list[int]:
        return list(self.preprocessing.shape)


class RoutingPolicy(BaseModel):
    """Escalate when the edge model's confidence score (on logits / temperature) < threshold."""

    kind: Literal["max_prob", "margin", "entropy"] = "max_prob"
    threshold: float = Field(ge=0.0, le=1.0)
    temperature: float = Field(1.0, gt=0.0, description="fit on the calibration split")
    mirror: bool = Field(
        False, description="score the image and its left-right mirror (one more edge inference)"
    )
    ensemble: bool = Field(
        False, description="score with every member of an ensemble edge model (member 0 answers)"
    )


class Manifest(BaseModel):
    family: str
    version: int = Field(ge=1)
    created: str
    labels: list[str]
    labels_sha256: str
    edge: ModelSpec
    cloud: ModelSpec
    policy: RoutingPolicy
    notes: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        return cls.model_validate_json(Path(path).read_text())

    def save(self, path: Path) -> None:
        Path(path).write_text(self.model_dump_json(indent=2) + "\n")

    def verify(self, family_dir: Path) -> None:
        """Raise ValueError unless every artifact and the label map hash as recorded."""
        if labels_sha256(self.labels) != self.labels_sha256:
            raise ValueError(f"{self.family}: label map does not match labels_sha256")
        for spec in (self.edge, self.cloud):
            for rel, expected in spec.files.items():
                actual = sha256_file(family_dir / rel)
                if actual != expected:
                    raise ValueError(
                        f"{self.family}: {rel} has sha256 {actual[:12]}…, "
                        f"manifest says {expected[:12]}…"
                    )


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def labels_sha256(labels: list[str]) -> str:
    return hashlib.sha256(json.dumps(labels, ensure_ascii=False).encode()).hexdigest()


def write_family_folder(
    folder: Path,
    family: str,
    files: dict[str, bytes],
    labels: list[str],
    preprocessing: Preprocessing,
    *,
    threshold: float = 0.5,
    version: int = 1,
    created: str = "",
) -> Manifest:
    """Write `files` (paths under edge/ and cloud/) into a family folder with a manifest that
    hashes them; models are taken as they are (e.g. trained elsewhere)."""
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)

    def spec(tier: str) -> ModelSpec:
        hashes = {rel: sha256_file(folder / rel) for rel in files if rel.startswith(f"{tier}/")}
        return ModelSpec(
            name=f"{family}_{tier}",
            version=version,
            precision="fp32",
            files=hashes,
            preprocessing=preprocessing,
        )

    manifest = Manifest(
        family=family,
        version=version,
        created=created,
        labels=labels,
        labels_sha256=labels_sha256(labels),
        edge=spec("edge"),
        cloud=spec("cloud"),
        policy=RoutingPolicy(threshold=threshold),
    )
    manifest.save(folder / "manifest.json")
    return manifest
