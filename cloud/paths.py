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


def edge_model_file(family_folder: Path) -> Path:
    """The (INT8) edge model IR a build writes into a family folder."""
    return family_folder / "edge" / "model.xml"
