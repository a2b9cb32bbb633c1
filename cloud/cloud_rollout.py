"""Roll a published family version out: its cloud model is ready in Triton before any edge
can see the manifest that names it, and cloud versions no manifest in use needs are unloaded.

Triton must run in explicit model-control mode on `repository`. The steps:

1. write the version's cloud model (from the registry's verified blobs) into the repository,
   next to the versions already there, and list them all in the version policy;
2. load the model and check that Triton reports the new version ready; the versions already
   served keep answering meanwhile. On failure the new version is taken out again and the
   registry's current pointer does not move;
3. move the registry's current pointer (edges watching the registry now switch);
4. serve only the cloud versions of the last `keep` manifests made current (the current one and
   the one edges may roll back to) and delete the other version folders.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cloud.manifest import Manifest
from cloud.registry import Registry
from cloud.triton_control import ModelControl, TritonControlError
from cloud.triton_repository import set_version_policy, version_folders, write_model

DEFAULT_KEEP = 2


@dataclass(frozen=True)
class Rollout:
    manifest: Manifest
    ready_s: float  # from the start of the roll-out until Triton served the new cloud version
    serving: list[int]  # cloud versions Triton serves afterwards
    unloaded: list[int]


def roll_out(
    registry: Registry,
    control: ModelControl,
    repository: Path,
    family: str,
    version: int | None = None,
    *,
    keep: int = DEFAULT_KEEP,
    gpu: bool = False,
) -> Rollout:
    """Make `version` of `family` (default: the newest published) current, cloud model first."""
    start = time.perf_counter()
    manifest = registry.get(family, version or max(registry.versions(family), default=0))
    name, cloud_version = manifest.cloud.name, manifest.cloud.version
    model_dir = Path(repository) / name
    written = (model_dir / str(cloud_version)).is_dir()
    if not written or cloud_version not in control.ready_versions(name):
        before = version_folders(model_dir) if model_dir.is_dir() else []
        with tempfile.TemporaryDirectory(prefix="edgecascade-rollout-") as tmp:
            write_model(manifest, registry.checkout(manifest, Path(tmp)), repository, gpu=gpu)
        try:
            control.load(name)
            if cloud_version not in control.ready_versions(name):
                raise TritonControlError(f"{name} version {cloud_version} is not ready after load")
        except TritonControlError:
            _retract(model_dir, cloud_version, before)
            raise
    ready_s = time.perf_counter() - start

    registry.activate(family, manifest.version)

    needed = {m.cloud.version for m in registry.in_use(family, keep) if m.cloud.name == name}
    served = [v for v in version_folders(model_dir) if v in needed]
    unloaded = [v for v in version_folders(model_dir) if v not in needed]
    if unloaded:
        set_version_policy(model_dir, served)
        control.load(name)
        for v in unloaded:
            shutil.rmtree(model_dir / str(v), ignore_errors=True)
    return Rollout(manifest, ready_s, control.ready_versions(name), unloaded)


def _retract(model_dir: Path, version: int, before: list[int]) -> None:
    """Take a version that failed to load out of the repository, as it was before.

    Triton itself needs nothing: the versions it served before the failed load still serve.
    """
    if before:
        shutil.rmtree(model_dir / str(version), ignore_errors=True)
        set_version_policy(model_dir, before)
    else:
        shutil.rmtree(model_dir, ignore_errors=True)
