"""Roll a published family version out: its cloud model is ready in every Triton before any edge
can see the manifest that names it, and cloud versions no manifest in use needs are unloaded.

Each Triton must run in explicit model-control mode on its model repository (a `CloudTarget`;
several Tritons may share one repository). The steps:

1. on each Triton in turn, write the version's cloud model (from the registry's verified blobs)
   into its repository, next to the versions already there, listed in the version policy; load
   the model and check that Triton reports the new version ready; the versions already served
   keep answering meanwhile. If any Triton fails, the new version is taken out of every
   repository and Triton again, and the registry's current pointer does not move;
2. move the registry's current pointer (edges watching the registry now switch);
3. on each Triton, serve only the cloud versions of the last `keep` manifests made current (the
   current one and the one edges may roll back to) and delete the other version folders.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.registry.store import Registry
from edgecascade.cloud.triton.control import ModelControl, TritonControlError
from edgecascade.cloud.triton.repository import set_version_policy, version_folders, write_model

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
    added: list[tuple[CloudTarget, list[int]]] = []  # where this roll-out added the version
    with tempfile.TemporaryDirectory(prefix="edgecascade-rollout-") as tmp:
        source = registry.checkout(manifest, Path(tmp))
        try:
            for target in targets:
                before = _load(target, manifest, source, gpu)
                if before is not None:
                    added.append((target, before))
        except TritonControlError:
            for target, before in added:
                _retract(target, name, manifest.cloud.version, before)
            raise
    ready_s = time.perf_counter() - start

    registry.activate(family, manifest.version)

    needed = {m.cloud.version for m in registry.in_use(family, keep) if m.cloud.name == name}
    unloaded: set[int] = set()
    for target in targets:
        unloaded |= _keep_only(target, name, needed)
    serving = {target.control.url: target.control.ready_versions(name) for target in targets}
    return Rollout(manifest, ready_s, serving, sorted(unloaded))


def _load(target: CloudTarget, manifest: Manifest, source: Path, gpu: bool) -> list[int] | None:
    """Serve the manifest's cloud version on `target`. Returns the versions its repository held
    before (None: it was served already, nothing changed); a failed load is retracted here."""
    name, version = manifest.cloud.name, manifest.cloud.version
    model_dir = target.repository / name
    if (model_dir / str(version)).is_dir() and version in target.control.ready_versions(name):
        return None
    before = [v for v in version_folders(model_dir) if v != version] if model_dir.is_dir() else []
    write_model(manifest, source, target.repository, gpu=gpu)
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
    """Unload and delete the cloud versions not `needed` on `target`; the versions dropped."""
    model_dir = target.repository / name
    present = set(version_folders(model_dir)) | set(target.control.ready_versions(name))
    dropped = present - needed
    if dropped:
        set_version_policy(model_dir, sorted(present & needed))
        target.control.load(name)
        for v in dropped:
            shutil.rmtree(model_dir / str(v), ignore_errors=True)
    return dropped
