"""What a frame source is, and the one registry of source kinds.

A kind registers a factory that turns a `--source` string into a Source. `open_source` picks
the kind named, or the first kind (by rank) that claims the string. Every module of this
package is imported before the registry is read, so a new kind is one new module here."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy.typing as npt

from edgecascade.cloud.common.errors import UserError

Image = npt.NDArray[Any]  # uint8 RGB [H, W, 3]
Reading = tuple[float | None, Image]  # position in a video file (ms; None: live or folder), image


class SourceUnavailable(UserError, RuntimeError):
    """The source cannot be read right now (not there yet, gone, or the stream dropped)."""


@dataclass(frozen=True)
class SourceFrame:
    index: int  # 0-based over the whole run, reconnects included
    position_ms: float | None  # position inside a video file; None for live sources/folders
    captured_at: float  # unix time when the frame was read
    image: Image


class Source(Protocol):
    """Frames from one place. `open` starts (or resumes) reading and raises SourceUnavailable
    when the source is not there; the iterator raises it when the source goes away and ends
    when the source does. A `live` source runs at its own pace: a slow reader loses frames.
    `str(source)` names it in logs and errors."""

    @property
    def live(self) -> bool: ...

    def open(self) -> Iterator[Reading]: ...


S = TypeVar("S", bound=Source)


@dataclass(frozen=True)
class SourceKind:
    name: str
    description: str  # for help: what a --source string of this kind looks like
    make: Callable[[str], Source]
    claims: Callable[[str], bool]  # whether a --source string is of this kind
    rank: int  # kinds that claim a string are tried in rank order, lowest first


SOURCE_KINDS: dict[str, SourceKind] = {}
_PACKAGE = __name__.rpartition(".")[0]  # edgecascade.edge.sources: one module per kind
_discovered = False


def register(
    name: str, description: str, *, claims: Callable[[str], bool], rank: int = 50
) -> Callable[[Callable[[str], S]], Callable[[str], S]]:
    """Decorator: `make(spec)` builds sources of kind `name`."""

    def add(make: Callable[[str], S]) -> Callable[[str], S]:
        if name in SOURCE_KINDS:
            raise ValueError(f"source kind {name!r} is registered twice")
        SOURCE_KINDS[name] = SourceKind(name, description, make, claims, rank)
        return make

    return add


def source_kinds() -> list[SourceKind]:
    """Every registered kind, in the order they are tried."""
    global _discovered
    if not _discovered:
        for module in pkgutil.iter_modules(importlib.import_module(_PACKAGE).__path__):
            importlib.import_module(f"{_PACKAGE}.{module.name}")
        _discovered = True
    return sorted(SOURCE_KINDS.values(), key=lambda kind: (kind.rank, kind.name))


def source_kind(name: str) -> SourceKind:
    """The kind called `name`; UserError naming the known kinds when there is none."""
    for kind in source_kinds():
        if kind.name == name:
            return kind
    raise UserError(f"unknown source kind {name!r}; known: {_known()}")


def open_source(spec: str, kind: str | None = None) -> Source:
    """The source `spec` names, read as `kind`, or as the first kind that claims it."""
    if kind is not None:
        return source_kind(kind).make(spec)
    for candidate in source_kinds():
        if candidate.claims(spec):
            return candidate.make(spec)
    raise UserError(f"no source kind claims {spec!r}; known: {_known()}")


def _known() -> str:
    return ", ".join(kind.name for kind in source_kinds())


def describe_kinds() -> str:
    """Each kind and what its --source strings look like, for help texts."""
    return "; ".join(f"{kind.name}: {kind.description}" for kind in source_kinds())
