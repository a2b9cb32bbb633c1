"""Where built artifacts live: $EDGECASCADE_ARTIFACTS, else ./artifacts."""

from __future__ import annotations

import os
from pathlib import Path


def artifacts_root() -> Path:
    return Path(os.environ.get("EDGECASCADE_ARTIFACTS", "artifacts")).resolve()


def family_dir(family: str, root: Path | None = None) -> Path:
    return (root or artifacts_root()) / family


def manifest_path(family: str, root: Path | None = None) -> Path:
    return family_dir(family, root) / "manifest.json"


def triton_repository(root: Path | None = None) -> Path:
    return (root or artifacts_root()) / "triton"


def registry_root(root: Path | None = None) -> Path:
    """The cloud model registry (published family versions, content-addressed blobs)."""
    return (root or artifacts_root()) / "registry"


def keys_dir(root: Path | None = None) -> Path:
    """Manifest signing keys: the build's development key, and the public keys edges trust."""
    return (root or artifacts_root()) / "keys"


def edge_model_file(family_folder: Path, precision: str = "int8") -> Path:
    """The edge model IR a build writes into a family folder: INT8, or the FP32 reference."""
    if precision not in ("int8", "fp32"):
        raise ValueError(f"edge precision {precision!r}: expected int8 or fp32")
    return family_folder / "edge" / ("model.xml" if precision == "int8" else "fp32/model.xml")


def baseline_model_file(family_folder: Path, name: str) -> Path:
    """The INT8 IR of baseline model `name` a build writes next to the family (never served)."""
    return family_folder / "baselines" / name / "model.xml"
