"""Which model families a command may be given: those this project builds, and of those the
ones built under the artifacts root."""

from __future__ import annotations

from pathlib import Path

from edgecascade.cloud.build.families import FAMILIES
from edgecascade.cloud.common.errors import UserError
from edgecascade.cloud.common.paths import artifacts_root, manifest_path


def known_family(family: str) -> str:
    """`family` if this project can build it; else a UserError naming those it can."""
    if family not in FAMILIES:
        raise UserError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    return family


def built_family(family: str, root: Path | None = None) -> Path:
    """The manifest of `family` under `root` (default: the artifacts root); a UserError for
    an unknown family or one not built there, that says how to build it."""
    path = manifest_path(family, root)
    if not path.exists():
        known_family(family)
        raise UserError(
            f"family {family!r} is not built under {root or artifacts_root()}: run "
            f"`edgecascade models build --family {family}` (or set EDGECASCADE_ARTIFACTS)"
        )
    return path
