"""The development signing key: `<artifacts>/keys/dev.ed25519`, made by the first build or
publish that needs it (its `dev.ed25519.pub` beside it is what edges trust by default).

Every manifest a build writes and every manifest the registry publishes is signed, so an edge
that trusts `<artifacts>/keys` serves local builds and published versions alike, and nothing
else. A production registry signs with its own key (`models publish --signing-key`).
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgecascade.cloud.common import signing
from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.paths import keys_dir

DEV_KEY = "dev"


def dev_key_file(root: Path | None = None) -> Path:
    return keys_dir(root) / f"{DEV_KEY}{signing.PRIVATE_SUFFIX}"


def dev_key(root: Path | None = None) -> Ed25519PrivateKey:
    """The development key under `root`, generated once when missing."""
    path = dev_key_file(root)
    if not path.exists():
        try:
            signing.generate_key(keys_dir(root), DEV_KEY)
        except signing.SigningKeyError:
            if not path.exists():  # not a concurrent build that made it first
                raise
    return signing.load_private_key(path)


def save_signed(manifest: Manifest, path: Path, key: Ed25519PrivateKey) -> Manifest:
    """Write `manifest` to `path` signed by `key`; the signed manifest."""
    signed = signing.sign(manifest, key)
    signed.save(path)
    return signed


def save_build_manifest(manifest: Manifest, path: Path) -> Manifest:
    """Write a build's manifest (`<root>/<family>/manifest.json`) signed by the development
    key of that artifacts root."""
    return save_signed(manifest, path, dev_key(Path(path).resolve().parent.parent))
