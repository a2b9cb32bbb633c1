"""Signed manifests: Ed25519 signatures, trusted key sets with rotation, and what is refused."""

import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from edgecascade.cloud.common import certs, signing
from edgecascade.cloud.common.certs_commands import app
from edgecascade.cloud.common.manifest import Manifest, Preprocessing, write_family_folder
from edgecascade.cloud.common.signing import (
    AlteredManifest,
    SignatureError,
    SigningKeyError,
    UnsignedManifest,
    UntrustedKey,
)


@pytest.fixture
def manifest(tmp_path: Path) -> Manifest:
    files = {"edge/model.onnx": b"edge", "cloud/model.onnx": b"cloud"}
    return write_family_folder(
        tmp_path / "family",
        "fashion",
        files,
        ["T-shirt/top", "Ankle boot"],
        Preprocessing(color="gray", size=28, resize_short=28),
        threshold=0.6,
    )


@pytest.fixture(scope="module")
def keys() -> dict[str, Ed25519PrivateKey]:
    return {name: Ed25519PrivateKey.generate() for name in ("old", "new", "stranger")}


def trusting(keys: dict[str, Ed25519PrivateKey], *names: str) -> signing.TrustedKeys:
    return {signing.key_id(keys[n].public_key()): keys[n].public_key() for n in names}


def signed_json(manifest: Manifest, key: Ed25519PrivateKey) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(signing.sign(manifest, key).model_dump_json())
    return data


def test_a_signed_manifest_verifies_after_a_round_trip_through_a_file(
    manifest: Manifest, keys: dict[str, Ed25519PrivateKey], tmp_path: Path
) -> None:
    signed = signing.sign(manifest, keys["new"])
    assert signed.signature is not None
    assert signed.signature.key_id == signing.key_id(keys["new"].public_key())
    signed.save(tmp_path / "manifest.json")
    verified = signing.verify_json((tmp_path / "manifest.json").read_text(), trusting(keys, "new"))
    assert verified == signed
    # Key order and spacing are not part of what is signed.
    data = json.loads((tmp_path / "manifest.json").read_text())
    reordered = json.dumps(dict(reversed(list(data.items()))), indent=4)
    assert signing.verify_json(reordered, trusting(keys, "new")) == signed


def test_rotation_accepts_each_trusted_key_and_drops_a_retired_one(
    manifest: Manifest, keys: dict[str, Ed25519PrivateKey]
) -> None:
    both = trusting(keys, "old", "new")
    by_old = json.dumps(signed_json(manifest, keys["old"]))
    by_new = json.dumps(signed_json(manifest, keys["new"]))
    assert signing.verify_json(by_old, both).family == "fashion"
    assert signing.verify_json(by_new, both).family == "fashion"
    old_id = signing.key_id(keys["old"].public_key())
    with pytest.raises(UntrustedKey, match=f"key {old_id}, which is not trusted"):
        signing.verify_json(by_old, trusting(keys, "new"))


def test_a_stranger_key_is_refused(manifest: Manifest, keys: dict[str, Ed25519PrivateKey]) -> None:
    stranger_id = signing.key_id(keys["stranger"].public_key())
    trusted = trusting(keys, "old", "new")
    with pytest.raises(UntrustedKey, match=stranger_id) as e:
        signing.verify_json(json.dumps(signed_json(manifest, keys["stranger"])), trusted)
    assert all(known in str(e.value) for known in trusted)
    assert "'fashion' v1" in str(e.value)


def test_an_unsigned_manifest_is_refused(manifest: Manifest) -> None:
    text = manifest.model_dump_json()
    assert "signature" not in text  # unsigned manifests are written as before
    with pytest.raises(UnsignedManifest, match="'fashion' v1 is not signed"):
        signing.verify_json(text, {})
    with pytest.raises(UnsignedManifest):
        signing.verify_json(json.dumps({**json.loads(text), "signature": None}), {})


@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: m["policy"].update(threshold=0.0),
        lambda m: m.update(labels=list(reversed(m["labels"]))),
        lambda m: m["edge"]["files"].update({"/etc/passwd": "0" * 64}),
        lambda m: m.update(version=2),
        lambda m: m.update(extra="field"),
        lambda m: m.pop("notes"),
    ],
)
def test_a_manifest_altered_after_signing_is_refused(
    manifest: Manifest, keys: dict[str, Ed25519PrivateKey], tamper: Callable[[dict[str, Any]], None]
) -> None:
    data = signed_json(manifest, keys["new"])
    tamper(data)
    with pytest.raises(AlteredManifest, match="altered after signing"):
        signing.verify_json(json.dumps(data), trusting(keys, "new"))


def test_a_signature_moved_to_another_manifest_or_key_id_is_refused(
    manifest: Manifest, keys: dict[str, Ed25519PrivateKey]
) -> None:
    trusted = trusting(keys, "old", "new")
    other = signed_json(manifest.model_copy(update={"version": 7}), keys["new"])
    data = signed_json(manifest, keys["new"])
    with pytest.raises(AlteredManifest):
        signing.verify_json(json.dumps({**data, "signature": other["signature"]}), trusted)
    relabelled = {**data["signature"], "key_id": signing.key_id(keys["old"].public_key())}
    with pytest.raises(AlteredManifest):
        signing.verify_json(json.dumps({**data, "signature": relabelled}), trusted)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"family": "f", "version": 1, "signature": {"key_id": "x", "ed25519": ""}}', "malformed"),
        (
            '{"family": "f", "version": 1, "signature": {"key_id": "0123456789abcdef", '
            '"ed25519": "not base64!"}}',
            "malformed",
        ),
    ],
)
def test_what_is_not_a_signed_manifest_is_a_signature_error(text: str, says: str) -> None:
    with pytest.raises(SignatureError, match=says) as e:
        signing.verify_json(text, {})
    assert type(e.value) is SignatureError


def test_signing_again_replaces_the_signature(
    manifest: Manifest, keys: dict[str, Ed25519PrivateKey]
) -> None:
    twice = signing.sign(signing.sign(manifest, keys["old"]), keys["new"])
    assert signing.verify_json(twice.model_dump_json(), trusting(keys, "new")) == twice


def test_generated_keys_are_trusted_from_their_folder(manifest: Manifest, tmp_path: Path) -> None:
    private, public = signing.generate_key(tmp_path / "keys", "registry-2026")
    signing.generate_key(tmp_path / "keys", "registry-2027")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert public.name == "registry-2026.ed25519.pub"
    trusted = signing.load_trusted([tmp_path / "keys"])
    assert len(trusted) == 2
    signed = signing.sign(manifest, signing.load_private_key(private))
    assert signing.verify_json(signed.model_dump_json(), trusted) == signed
    assert signing.load_trusted([public]).keys() == {signed.signature.key_id}
    with pytest.raises(SigningKeyError, match="exists already"):
        signing.generate_key(tmp_path / "keys", "registry-2026")


def test_key_files_that_cannot_be_used_are_clear_errors(tmp_path: Path) -> None:
    certs.init(tmp_path)
    with pytest.raises(SigningKeyError, match="not an Ed25519 private key"):
        signing.load_private_key(tmp_path / certs.CA_KEY)
    with pytest.raises(SigningKeyError, match="not a PEM public key"):
        signing.load_trusted([tmp_path / certs.CA_CERT])
    with pytest.raises(SigningKeyError, match="cannot be read"):
        signing.load_trusted([tmp_path / "missing.ed25519.pub"])
    with pytest.raises(SigningKeyError, match="key name"):
        signing.generate_key(tmp_path, "../up")


def test_certs_signing_key_command(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["signing-key", "registry", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (key_id,) = signing.load_trusted([tmp_path])
    assert f"signing key {key_id}" in result.output
    result = runner.invoke(app, ["signing-key", "registry", "--dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "exists already" in result.output and len(result.output.strip().splitlines()) == 1


def test_a_missing_private_key_says_it_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match="cannot be read") as refused:
        signing.load_private_key(tmp_path / "nosuch.ed25519")
    assert "not an unencrypted PEM" not in str(refused.value)
