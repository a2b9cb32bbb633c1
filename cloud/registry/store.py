"""The cloud model registry: published family versions with content-addressed artifacts.

Layout under the registry folder (default: ``<artifacts>/registry``)::

    blobs/sha256/<hex>                          every artifact, stored once, read-only
    families/<family>/<version>/manifest.json   one per published family version, never changed
    families/<family>/CURRENT                   the version edges should run (replaced atomically)
    families/<family>/activations.jsonl         every move of CURRENT, oldest first

`publish` turns what ``edgecascade models build`` wrote into the next family version. The edge
and cloud model versions go up only when that model changed (its files, preprocessing or the
label map), so an unchanged cloud model keeps its Triton version. Writers hold a file lock;
readers never need one (files appear by rename). Watchers poll `current_versions`, a read of
one tiny file per family.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgecascade.cloud.common import signing
from edgecascade.cloud.common.errors import shown
from edgecascade.cloud.common.manifest import Manifest, ModelSpec, artifact_path, sha256_file
from edgecascade.cloud.common.paths import family_dir, registry_root
from edgecascade.cloud.registry.signing_keys import dev_key

SHA256_HEX = re.compile(r"[0-9a-f]{64}")
FAMILY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
MANIFEST = "manifest.json"
CURRENT = "CURRENT"
ACTIVATIONS = "activations.jsonl"


class NotFound(LookupError):
    """No such family, version or blob in the registry."""


class CorruptBlob(ValueError):
    """A stored blob no longer hashes to its name."""


@dataclass(frozen=True)
class Publication:
    """What `publish` did: the manifest now latest, and what changed (empty: nothing)."""

    manifest: Manifest
    changes: tuple[str, ...]

    @property
    def created(self) -> bool:
        return bool(self.changes)


class Registry:
    """A registry folder; every method reads the folder, so several processes may share it."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root else registry_root()

    # -- reading ------------------------------------------------------------------------------

    def families(self) -> list[str]:
        """Families with at least one published version."""
        return sorted({p.parent.parent.name for p in self._families.glob(f"*/*/{MANIFEST}")})

    def versions(self, family: str) -> list[int]:
        """Published versions of `family`, oldest first."""
        folder = self._family(family)
        found = (
            int(p.parent.name) for p in folder.glob(f"*/{MANIFEST}") if p.parent.name.isdigit()
        )
        return sorted(found)

    def current_version(self, family: str) -> int | None:
        try:
            return int((self._family(family) / CURRENT).read_text())
        except FileNotFoundError:
            return None

    def current_versions(self) -> dict[str, int]:
        """family -> current version, for every family that has one (cheap enough to poll)."""
        return {
            p.parent.name: int(p.read_text()) for p in sorted(self._families.glob(f"*/{CURRENT}"))
        }

    def manifest_file(self, family: str, version: int | None = None) -> Path:
        """The stored manifest of `version` (None or 0: the current one); NotFound if none."""
        if not version:
            version = self.current_version(family)
            if version is None:
                raise NotFound(f"family {family!r} has no published version in the registry")
        path = self._family(family) / str(version) / MANIFEST
        if path.is_file():
            self.inside(path)
        else:
            known = self.versions(family)
            raise NotFound(
                f"family {family!r} has no version {version} (published: {known})"
                if known
                else f"family {family!r} has no published version in the registry"
            )
        return path

    def get(self, family: str, version: int | None = None) -> Manifest:
        """A published manifest (None or 0: the current one)."""
        return Manifest.load(self.manifest_file(family, version))

    def manifests(self) -> list[Manifest]:
        """Every published manifest of every family, by family then version."""
        return [m for family in self.families() for m in self.history(family)]

    def history(self, family: str) -> list[Manifest]:
        """Every published manifest of `family`, oldest first."""
        return [self.get(family, v) for v in self.versions(family)]

    def in_use(self, family: str, keep: int = 2) -> list[Manifest]:
        """The manifests of the last `keep` distinct versions made current, the current first.

        Edges run the current one and keep the one before to roll back to.
        """
        log = self._family(family) / ACTIVATIONS
        lines = log.read_text().splitlines() if log.exists() else []
        versions: list[int] = []
        for line in reversed(lines):
            version = int(json.loads(line)["version"])
            if version not in versions:
                versions.append(version)
        return [self.get(family, v) for v in versions[: max(keep, 1)]]

    def blob_path(self, sha256: str) -> Path:
        """Where the blob with this sha256 is (or would be) stored."""
        if not SHA256_HEX.fullmatch(sha256):
            raise ValueError(f"sha256 {shown(sha256)}: expected 64 lowercase hex digits")
        return self.root / "blobs" / "sha256" / sha256

    def verify_blob(self, sha256: str) -> Path:
        """The blob's path once its content hashes to its name; NotFound or CorruptBlob."""
        path = self.blob_path(sha256)
        if not path.is_file():
            raise NotFound(f"no artifact with sha256 {sha256} in the registry")
        self.inside(path)
        actual = sha256_file(path)
        if actual != sha256:
            raise CorruptBlob(
                f"artifact {sha256} is corrupted in the registry (content hashes to {actual}); "
                "publish the family again to restore it"
            )
        return path

    def checkout(self, manifest: Manifest, dest: Path) -> Path:
        """Lay the manifest's verified artifacts out in `dest` as a family folder; return it."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        for rel, sha in _files(manifest).items():
            target = artifact_path(dest, rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.unlink(missing_ok=True)
            shutil.copyfile(self.verify_blob(sha), target)
        manifest.save(dest / MANIFEST)
        return dest

    # -- writing ------------------------------------------------------------------------------

    def publish(
        self,
        family: str,
        source_dir: Path | None = None,
        *,
        activate: bool = True,
        signing_key: Ed25519PrivateKey | None = None,
    ) -> Publication:
        """Publish the family folder `source_dir` (default: the built one) as a new version,
        its manifest signed by `signing_key` (default: the development key, see
        `signing_keys`).

        Hashes are checked first. Nothing is created when the models, label map and policy
        equal the latest published version's. `activate=False` stages the version without
        making it current (see `edgecascade.cloud.registry.rollout`).
        """
        key = signing_key or dev_key()
        source_dir = Path(source_dir) if source_dir else family_dir(family)
        if not (source_dir / MANIFEST).is_file():
            raise NotFound(f"no built family in {source_dir} (edgecascade models build)")
        source = Manifest.load(source_dir / MANIFEST)
        if source.family != family:
            raise ValueError(f"{source_dir} holds family {source.family!r}, not {family!r}")
        source.verify(source_dir)
        with self._lock():
            versions = self.versions(family)
            latest = self.get(family, versions[-1]) if versions else None
            for rel, sha in _files(source).items():  # also restores a corrupted blob
                self._store_blob(artifact_path(source_dir, rel), sha)
            changes = _changes(source, latest)
            if not changes:
                assert latest is not None
                return Publication(latest, ())
            manifest = signing.sign(_next_manifest(source, latest), key)  # its own version
            folder = self._family(family) / str(manifest.version)
            folder.mkdir(parents=True)
            _write_atomic(folder / MANIFEST, manifest.model_dump_json(indent=2) + "\n")
        if activate:
            self.activate(family, manifest.version)
        return Publication(manifest, changes)

    def activate(self, family: str, version: int) -> Manifest:
        """Make a published version current (also a rollback), once all its blobs verify; its
        manifest, signature included, is left as published."""
        manifest = self.get(family, version)
        for sha in _files(manifest).values():
            self.verify_blob(sha)
        with self._lock():
            if self.current_version(family) != version:
                folder = self._family(family)
                _write_atomic(folder / CURRENT, f"{version}\n")
                at = datetime.now(UTC).isoformat(timespec="milliseconds")
                with open(folder / ACTIVATIONS, "a") as log:
                    log.write(json.dumps({"version": version, "at": at}) + "\n")
        return manifest

    def inside(self, path: Path) -> Path:
        """`path` once it is inside the registry on the real file system (a symbolic link
        that leads out is refused), else ValueError; the message names no absolute path."""
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise ValueError(f"{path.relative_to(self.root)} leads outside the registry")
        return path

    @property
    def _families(self) -> Path:
        return self.root / "families"

    def check_family(self, family: str) -> str:
        """`family` if it is a valid family name, else ValueError saying why."""
        self._family(family)
        return family

    def _family(self, family: str) -> Path:
        if not FAMILY_NAME.fullmatch(family):
            raise ValueError(
                f"family name {shown(family)}: expected at most 128 letters, digits, '_', '-', '.'"
            )
        return self._families / family

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _store_blob(self, source: Path, sha256: str) -> None:
        """Copy `source` in as blob `sha256` unless an intact copy is already there."""
        path = self.blob_path(sha256)
        if path.is_file() and sha256_file(path) == sha256:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
                shutil.copyfileobj(src, out)
            if sha256_file(Path(tmp)) != sha256:
                raise ValueError(f"{source} changed while it was being published")
            os.chmod(tmp, 0o444)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _files(manifest: Manifest) -> dict[str, str]:
    """Every artifact of the pair: relative path -> sha256."""
    return {**manifest.edge.files, **manifest.cloud.files}


def _model_key(spec: ModelSpec) -> dict[str, Any]:
    """What makes a model a different model (not its version number or measured metrics)."""
    return spec.model_dump(exclude={"version", "metrics"})


def _changes(source: Manifest, latest: Manifest | None) -> tuple[str, ...]:
    """What `source` changes over the latest published version, in words."""
    if latest is None:
        return ("first version",)
    changes = []
    if source.labels_sha256 != latest.labels_sha256:
        changes.append("label map")
    for tier in ("edge", "cloud"):
        if _model_key(getattr(source, tier)) != _model_key(getattr(latest, tier)):
            changes.append(f"{tier} model")
    if source.policy != latest.policy:
        changes.append("policy")
    return tuple(changes)


def _next_manifest(source: Manifest, latest: Manifest | None) -> Manifest:
    """`source` numbered as the next family version; a model's version goes up if it changed."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    if latest is None:
        edge, cloud, version = source.edge.version, source.cloud.version, 1
    else:
        labels_changed = source.labels_sha256 != latest.labels_sha256

        def bump(new: ModelSpec, old: ModelSpec) -> int:
            changed = labels_changed or _model_key(new) != _model_key(old)
            return old.version + 1 if changed else old.version

        edge, cloud = bump(source.edge, latest.edge), bump(source.cloud, latest.cloud)
        version = latest.version + 1
    return source.model_copy(
        update={
            "version": version,
            "created": now,
            "edge": source.edge.model_copy(update={"version": edge}),
            "cloud": source.cloud.model_copy(update={"version": cloud}),
            "notes": {**source.notes, "built": source.created},
        }
    )


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
