"""Signed manifests: Ed25519 over the canonical JSON of a manifest without its signature.

The registry signs with a private key (`generate_key` makes one); an edge trusts a set of public
keys, more than one while keys are rotated, each known by its key id (the first 16 hex digits of
the sha256 of the raw public key). `verify_json` refuses a manifest that is unsigned, signed by
a key not trusted, or altered after signing, each with its own error saying which.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import ValidationError

from edgecascade.cloud.common.certs import write_atomically
from edgecascade.cloud.common.errors import UserError
from edgecascade.cloud.common.manifest import Manifest, Signature, plain_name

PRIVATE_SUFFIX = ".ed25519"
PUBLIC_SUFFIX = ".ed25519.pub"
SIGNATURE_FIELD = "signature"

TrustedKeys = Mapping[str, Ed25519PublicKey]


class SigningKeyError(UserError, ValueError):
    """A key file that cannot be made or read; the message names it."""


class SignatureError(ValueError):
    """A manifest whose signature cannot be accepted; the subclass says why."""


class UnsignedManifest(SignatureError):
    """The manifest carries no signature."""


class UntrustedKey(SignatureError):
    """Signed by a key that is not among the trusted ones."""


class AlteredManifest(SignatureError):
    """The signature does not match the manifest: it changed after signing (or is forged)."""


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_key(folder: Path, name: str) -> tuple[Path, Path]:
    """A new signing key `name` in `folder`: (private key file, 0600; public key file, for
    the edges to trust). An existing key is never replaced."""
    try:
        plain_name("key name", name)
    except ValueError as e:
        raise SigningKeyError(str(e)) from None
    folder = Path(folder)
    private, public = folder / f"{name}{PRIVATE_SUFFIX}", folder / f"{name}{PUBLIC_SUFFIX}"
    if private.exists() or public.exists():
        raise SigningKeyError(f"signing key {private} exists already: choose another name")
    folder.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    write_atomically(private, private_pem, mode=0o600)
    write_atomically(public, public_pem, mode=0o644)
    return private, public


def load_private_key(path: Path) -> Ed25519PrivateKey:
    pem = _read(path)
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise SigningKeyError(f"{path} is not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} is not an Ed25519 private key")
    return key


def load_trusted(paths: Iterable[Path]) -> dict[str, Ed25519PublicKey]:
    """The public keys in `paths` (files, or folders of *.ed25519.pub files) by key id."""
    files: list[Path] = []
    for path in map(Path, paths):
        files.extend(sorted(path.glob(f"*{PUBLIC_SUFFIX}")) if path.is_dir() else [path])
    trusted = {}
    for file in files:
        try:
            key = serialization.load_pem_public_key(_read(file))
        except ValueError as e:
            raise SigningKeyError(f"{file} is not a PEM public key ({e})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise SigningKeyError(f"{file} is not an Ed25519 public key")
        trusted[key_id(key)] = key
    return trusted


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise SigningKeyError(f"key file {path} cannot be read: {e.strerror}") from None


def canonical_bytes(data: Mapping[str, Any]) -> bytes:
    """What is signed: the manifest's JSON object without its signature, keys sorted, no
    spaces, UTF-8."""
    unsigned = {k: v for k, v in data.items() if k != SIGNATURE_FIELD}
    return json.dumps(
        unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def sign(manifest: Manifest, key: Ed25519PrivateKey) -> Manifest:
    """`manifest` signed by `key` (a signature it had before is replaced)."""
    data = manifest.model_dump(mode="json", exclude={SIGNATURE_FIELD})
    signature = Signature(
        key_id=key_id(key.public_key()),
        ed25519=base64.b64encode(key.sign(canonical_bytes(data))).decode(),
    )
    return manifest.model_copy(update={SIGNATURE_FIELD: signature})


def verify_json(text: str | bytes, trusted: TrustedKeys) -> Manifest:
    """The manifest in `text` once its signature is checked against the `trusted` keys:
    UnsignedManifest, UntrustedKey or AlteredManifest otherwise (a SignatureError when it is
    not a JSON object or the signature is malformed; pydantic's error when, signed, it is
    still not a valid manifest)."""
    try:
        data = json.loads(text)
    except ValueError:
        raise SignatureError("the manifest is not JSON") from None
    if not isinstance(data, dict):
        raise SignatureError("the manifest is not a JSON object")
    label = _label(data)
    if data.get(SIGNATURE_FIELD) is None:
        raise UnsignedManifest(
            f"{label} is not signed: publish it with a signing key, or allow unsigned "
            "development builds explicitly"
        )
    try:
        signature = Signature.model_validate(data[SIGNATURE_FIELD])
        signed = base64.b64decode(signature.ed25519, validate=True)
    except (ValidationError, binascii.Error):
        raise SignatureError(f"{label}: its signature is malformed") from None
    public_key = trusted.get(signature.key_id)
    if public_key is None:
        known = ", ".join(sorted(trusted)) or "none"
        raise UntrustedKey(
            f"{label} is signed by key {signature.key_id}, which is not trusted here "
            f"(trusted: {known})"
        )
    try:
        public_key.verify(signed, canonical_bytes(data))
    except InvalidSignature:
        raise AlteredManifest(
            f"{label}: the signature by key {signature.key_id} does not match: the manifest "
            "was altered after signing"
        ) from None
    return Manifest.model_validate(data)


def _label(data: Mapping[str, Any]) -> str:
    family, version = str(data.get("family", "?")), str(data.get("version", "?"))
    return f"manifest {family[:80]!r} v{version[:20]}"
