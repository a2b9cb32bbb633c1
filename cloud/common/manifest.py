"""The manifest that pins an edge model and a cloud model together (content-addressed)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from edgecascade.cloud.common.errors import shown

# Every model of every family takes uint8 NHWC images (normalisation lives in the graph)
# and returns float32 logits [N, classes].
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
# The Triton model-config parameter that carries the sha256 of the label map a model serves.
LABELS_PARAMETER = "labels_sha256"
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# An artifact is named by a relative path of plain names ("edge/model.xml"): no absolute path,
# no "." or "..", no empty part, no backslash or control character, so that joining it to a
# family folder never leaves that folder.
ARTIFACT_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")
ARTIFACT_MAX_PARTS = 8
ARTIFACT_MAX_CHARS = 512
# Model and family names become folder names (Triton's repository, the edge cache).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def check_artifact_name(rel: str) -> str:
    """`rel` if it is a safe artifact name (see ARTIFACT_PART), else ValueError saying why."""
    if not isinstance(rel, str) or not rel:
        raise ValueError("artifact name is empty")
    if len(rel) > ARTIFACT_MAX_CHARS:
        raise ValueError(
            f"artifact name {shown(rel)} is longer than {ARTIFACT_MAX_CHARS} characters"
        )
    if rel.startswith("/"):
        raise ValueError(f"artifact name {shown(rel)} is an absolute path")
    parts = rel.split("/")
    if len(parts) > ARTIFACT_MAX_PARTS:
        raise ValueError(f"artifact name {shown(rel)} has more than {ARTIFACT_MAX_PARTS} parts")
    for part in parts:
        if part in ("", ".", ".."):
            raise ValueError(f"artifact name {shown(rel)} has an empty, '.' or '..' part")
        if not ARTIFACT_PART.fullmatch(part):
            raise ValueError(
                f"artifact name {shown(rel)}: each part must be letters, digits, '_', '.', '+', "
                "'-' (not starting with '.' or '-')"
            )
    return rel


def artifact_path(folder: Path, rel: str) -> Path:
    """Where artifact `rel` goes in `folder`; ValueError unless it stays inside `folder`
    (checked again on the real file system, so a symbolic link cannot lead out either)."""
    check_artifact_name(rel)
    folder = Path(folder)
    target = folder.joinpath(*PurePosixPath(rel).parts)
    root = folder.resolve()
    if not target.resolve().is_relative_to(root) or target.resolve() == root:
        raise ValueError(f"artifact name {rel!r} leads outside its folder")
    return target


def plain_name(kind: str, value: str) -> str:
    """`value` when it is a plain name (NAME), else ValueError saying what a `kind` may hold."""
    if not NAME.fullmatch(value):
        raise ValueError(
            f"{kind} {shown(value)}: expected letters, digits, '_', '-', '.' "
            "(at most 128, not starting with '.', '_' or '-')"
        )
    return value


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

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        return plain_name("model name", name)

    @field_validator("files")
    @classmethod
    def _plain_files(cls, files: dict[str, str]) -> dict[str, str]:
        for rel, sha in files.items():
            check_artifact_name(rel)
            if not SHA256_HEX.fullmatch(sha):
                raise ValueError(f"artifact {rel!r}: sha256 must be 64 lowercase hex digits")
        return files

    @property
    def key(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def input_shape(self) -> list[int]:
        return list(self.preprocessing.shape)


class RoutingPolicy(BaseModel):
    """Escalate when the edge model's confidence score (on logits / temperature) < threshold."""

    kind: str = Field(
        "max_prob", description="a policy kind of edgecascade.router.policy's registry"
    )
    threshold: float = Field(ge=0.0, le=1.0)
    temperature: float = Field(1.0, gt=0.0, description="fit on the calibration split")
    mirror: bool = Field(
        False,
        description="answer with the mean of the image's and its left-right mirror's views "
        "(twice the edge inference)",
    )
    ensemble: bool = Field(
        False, description="answer with the mean of every member of an ensemble edge model"
    )


class Signature(BaseModel):
    """An Ed25519 signature of the manifest without this field (see cloud.common.signing)."""

    key_id: str = Field(pattern=r"^[0-9a-f]{16}$", description="which key signed")
    ed25519: str = Field(description="the 64-byte signature, base64")


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
    # Left out of the JSON while None, so an unsigned manifest is written as before.
    signature: Signature | None = Field(None, exclude_if=lambda value: value is None)

    @field_validator("family")
    @classmethod
    def _plain_family(cls, family: str) -> str:
        return plain_name("family name", family)

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
                actual = sha256_file(artifact_path(family_dir, rel))
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
        target = artifact_path(folder, rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

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
