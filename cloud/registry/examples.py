"""Where the cloud side keeps the examples edges upload: one store per family and edge,
``<registry>/examples/<family>/<edge_id>.sqlite``, read by `models adapt`."""

from __future__ import annotations

from pathlib import Path

from edgecascade.cloud.common.errors import InvalidInput, shown
from edgecascade.cloud.common.examples import ExampleStore
from edgecascade.cloud.registry.store import FAMILY_NAME

EXAMPLES = "examples"
SUFFIX = ".sqlite"


def checked_name(what: str, name: str) -> str:
    """`name` if it is path-safe (letters, digits, '_', '.', '-', not starting with a
    punctuation mark, at most 128 characters); InvalidInput (a ValueError) naming `what`."""
    if not FAMILY_NAME.fullmatch(name):
        raise InvalidInput(
            f"{what} {shown(name)}: expected letters, digits, '_', '.' or '-' (at most 128,"
            " starting with a letter or digit)"
        )
    return name


def received_path(registry_dir: Path, family: str, edge_id: str) -> Path:
    """The store file of `edge_id`'s uploads for `family`."""
    family_folder = Path(registry_dir) / EXAMPLES / checked_name("family", family)
    return family_folder / f"{checked_name('edge id', edge_id)}{SUFFIX}"


def open_received(path: Path, max_bytes: int = 1 << 62) -> ExampleStore:
    """A store file of the registry's (or one copied from it): SQLite's rollback journal, as
    every gateway on any host that shares the registry opens it (ExampleStore shared_volume)."""
    return ExampleStore(path, max_bytes, shared_volume=True)


def received_files(registry_dir: Path, family: str) -> list[Path]:
    """The store files of every edge that uploaded examples of `family`, by edge id."""
    folder = Path(registry_dir) / EXAMPLES / checked_name("family", family)
    return sorted(folder.glob(f"*{SUFFIX}"))
