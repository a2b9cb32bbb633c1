"""Roll a published family version out: its cloud model is ready in every Triton before any edge
can see the manifest that names it, and cloud versions no manifest in use needs are unloaded.

Each Triton must run in explicit model-control mode on its model repository (a `CloudTarget`;
several Tritons may share one repository). The steps:

1. on each Triton in turn, write the version's cloud model (from the registry's verified blobs)
   into its repository, next to the versions already there, listed in the version policy; load
   the model and check that Triton reports the new version ready; the versions already served
   keep answering meanwhile. On CPU the family model (the edge's KServe model served by the
   cloud, cloud/triton/family.py) gets the manifest's version the same way. If any Triton
   fails, the new versions are taken out of every repository and Triton again, and the
   registry's current pointer does not move;
2. move the registry's current pointer (edges watching the registry now switch);
3. on each Triton, serve only the cloud (and family) versions of the last `keep` manifests made
   current (the current one and the one edges may roll back to) and delete the other version
   folders.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.registry.store import Registry
from edgecascade.cloud.triton.control import ModelControl, TritonControlError
from edgecascade.cloud.triton.repository import (
    set_version_policy,
    version_folders,
    write_family_model,
    write_model,
)

DEFAULT_KEEP = 2


@dataclass(frozen=True)
class CloudTarget:
    """A Triton in explicit model-control mode and the model repository it serves."""

    control: ModelControl
    repository: Path


@dataclass(frozen=True)
class Rollout:
    manifest: Manifest
    ready_s: float  # from the start of the roll-out until every Triton served the new version
    serving: dict[str, list[int]]  # cloud versions each Triton (by URL) serves afterwards
    unloaded: list[int]


def roll_out(
    registry: Registry,
    targets: Sequence[CloudTarget],
    family: str,
    version: int | None = None,
    *,
    keep: int = DEFAULT_KEEP,
    gpu: bool = False,
) -> Rollout:
    """Make `version` of `family` (default: the newest published) current, cloud model first
    on every target."""
    if not targets:
        raise ValueError("a roll-out needs at least one Triton")
    start = time.perf_counter()
    manifest = registry.get(family, version or max(registry.versions(family), default=0))
    name = manifest.cloud.name
    added: list[tuple[CloudTarget, str, int, list[int]]] = []  # what this roll-out added where
    with tempfile.TemporaryDirectory(prefix="edgecascade-rollout-") as tmp:
        source = registry.checkout(manifest, Path(tmp))
        try:
            for target in targets:
                for model, version, write in _models(manifest, source, target, gpu):
                    before = _load(target, model, version, write)
                    if before is not None:
                        added.append((target, model, version, before))
        except TritonControlError:
            for target, model, version, before in reversed(added):
                _retract(target, model, version, before)
            raise
    ready_s = time.perf_counter() - start

    registry.activate(family, manifest.version)

    in_use = registry.in_use(family, keep)
    needed = {m.cloud.version for m in in_use if m.cloud.name == name}
    unloaded: set[int] = set()
    for target in targets:
        unloaded |= _keep_only(target, name, needed)
        _keep_only(target, manifest.family, {m.version for m in in_use})
    serving = {target.control.url: target.control.ready_versions(name) for target in targets}
    return Rollout(manifest, ready_s, serving, sorted(unloaded))


def _models(
    manifest: Manifest, source: Path, target: CloudTarget, gpu: bool
) -> list[tuple[str, int, Callable[[], object]]]:
    """The models a roll-out serves on `target`: (name, version, what writes it), cloud first."""
    return [
        (
            manifest.cloud.name,
            manifest.cloud.version,
            lambda: write_model(manifest, source, target.repository, gpu=gpu),
        ),
        (
            manifest.family,
            manifest.version,
            lambda: write_family_model(manifest, target.repository, gpu=gpu),
        ),
    ]


def _load(
    target: CloudTarget, name: str, version: int, write: Callable[[], object]
) -> list[int] | None:
    """Serve `version` of model `name` on `target` (`write` puts it in the repository). Returns
    the versions its repository held before (None: it was served already, nothing changed); a
    failed load is retracted here."""
    model_dir = target.repository / name
    if (model_dir / str(version)).is_dir() and version in target.control.ready_versions(name):
        return None
    before = [v for v in version_folders(model_dir) if v != version] if model_dir.is_dir() else []
    write()
    try:
        target.control.load(name)
        if version not in target.control.ready_versions(name):
            raise TritonControlError(f"{name} version {version} is not ready after load")
    except TritonControlError:
        _retract(target, name, version, before, reload=False)
        raise
    return before


def _retract(
    target: CloudTarget, name: str, version: int, before: list[int], reload: bool = True
) -> None:
    """Take `version` out of the target's repository, as it was before; with `reload`, out of
    its Triton too (a failed load needs none: the versions served before still serve)."""
    model_dir = target.repository / name
    if before:
        shutil.rmtree(model_dir / str(version), ignore_errors=True)
        set_version_policy(model_dir, before)
    else:
        shutil.rmtree(model_dir, ignore_errors=True)
    # A Triton that fails now is the failing one: it serves what it served before, if anything.
    with contextlib.suppress(TritonControlError):
        if reload and before:
            target.control.load(name)
        elif reload:
            target.control.unload(name)


def _keep_only(target: CloudTarget, name: str, needed: set[int]) -> set[int]:
    """Unload and delete the versions of model `name` not `needed` on `target`; the versions
    dropped."""
    model_dir = target.repository / name
    present = set(version_folders(model_dir)) | set(target.control.ready_versions(name))
    dropped = present - needed
    if dropped:
        set_version_policy(model_dir, sorted(present & needed))
        target.control.load(name)
        for v in dropped:
            shutil.rmtree(model_dir / str(v), ignore_errors=True)
    return dropped
