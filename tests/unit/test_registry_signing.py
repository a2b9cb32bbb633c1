"""Every manifest a build writes and every version the registry publishes is signed: by the
development key under the artifacts root (made once), or by the key `--signing-key` names."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgecascade.cloud.common import signing
from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.paths import keys_dir
from edgecascade.cloud.registry import signing_keys
from edgecascade.cloud.registry.store import Registry
from edgecascade.edge.cli import app
from edgecascade.router.policy.calibration import calibrate_manifest
from tests.unit.test_registry import write_family


@pytest.fixture
def artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "artifacts"
    monkeypatch.setenv("EDGECASCADE_ARTIFACTS", str(root))
    return root


def trusted(root: Path) -> signing.TrustedKeys:
    return signing.load_trusted([keys_dir(root)])


def test_the_development_key_is_made_once(artifacts: Path) -> None:
    key = signing_keys.dev_key()
    private = artifacts / "keys" / "dev.ed25519"
    assert private.stat().st_mode & 0o777 == 0o600
    assert (artifacts / "keys" / "dev.ed25519.pub").is_file()
    assert signing.key_id(signing_keys.dev_key().public_key()) == signing.key_id(key.public_key())
    assert list(trusted(artifacts)) == [signing.key_id(key.public_key())]


def test_a_build_manifest_is_signed_by_the_key_of_its_artifacts_root(tmp_path: Path) -> None:
    root = tmp_path / "elsewhere"
    folder = write_family(root / "pets")
    manifest = Manifest.load(folder / "manifest.json")
    signing_keys.save_build_manifest(manifest, folder / "manifest.json")
    checked = signing.verify_json((folder / "manifest.json").read_bytes(), trusted(root))
    assert checked.model_dump(exclude={"signature"}) == manifest.model_dump(exclude={"signature"})


def test_publish_signs_each_version_and_activate_keeps_it_valid(
    artifacts: Path, tmp_path: Path
) -> None:
    registry = Registry(artifacts / "registry")
    v1 = registry.publish("pets", write_family(tmp_path / "b1")).manifest
    v2 = registry.publish("pets", write_family(tmp_path / "b2", threshold=0.7)).manifest
    registry.activate("pets", 1)
    for manifest in (v1, v2):
        stored = registry.manifest_file("pets", manifest.version).read_bytes()
        assert signing.verify_json(stored, trusted(artifacts)).version == manifest.version
    checkout = registry.checkout(v2, tmp_path / "checkout")  # what ModelSync edges receive
    signing.verify_json((checkout / "manifest.json").read_bytes(), trusted(artifacts))


def test_a_manifest_altered_in_the_registry_fails_verification(
    artifacts: Path, tmp_path: Path
) -> None:
    registry = Registry(artifacts / "registry")
    registry.publish("pets", write_family(tmp_path / "build"))
    path = registry.manifest_file("pets")
    data = json.loads(path.read_text())
    data["policy"]["threshold"] = 0.0  # never escalate
    with pytest.raises(signing.AlteredManifest):
        signing.verify_json(json.dumps(data), trusted(artifacts))


def test_models_publish_signs_with_the_dev_key_or_the_key_given(
    artifacts: Path, tmp_path: Path
) -> None:
    source = write_family(tmp_path / "build")
    registry = artifacts / "registry"
    args = ["models", "publish", "--family", "pets", "--source", str(source)]
    result = CliRunner().invoke(app, [*args, "--registry", str(registry)])
    assert result.exit_code == 0, result.output
    dev = signing.verify_json(
        Registry(registry).manifest_file("pets").read_bytes(), trusted(artifacts)
    )

    private, public = signing.generate_key(tmp_path / "prod", "prod")
    other = tmp_path / "other-registry"
    result = CliRunner().invoke(
        app, [*args, "--registry", str(other), "--signing-key", str(private)]
    )
    assert result.exit_code == 0, result.output
    stored = Registry(other).manifest_file("pets").read_bytes()
    assert signing.verify_json(stored, signing.load_trusted([public])).signature != dev.signature
    with pytest.raises(signing.UntrustedKey):
        signing.verify_json(stored, trusted(artifacts))

    missing = CliRunner().invoke(
        app, [*args, "--registry", str(other), "--signing-key", str(tmp_path / "nope")]
    )
    assert missing.exit_code == 1 and "cannot be read" in " ".join(missing.output.split())


def test_calibration_signs_the_manifest_again_after_writing_the_policy(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    folder = write_family(root / "pets")
    signing_keys.save_build_manifest(
        Manifest.load(folder / "manifest.json"), folder / "manifest.json"
    )
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 600)
    edge = rng.normal(size=(600, 3)) + 3 * np.eye(3)[labels] * rng.random((600, 1))
    np.savez(
        folder / "calibration.npz",
        edge_logits=edge.astype(np.float32),
        cloud_logits=(4 * np.eye(3)[labels]).astype(np.float32),
        labels=labels,
    )
    before = Manifest.load(folder / "manifest.json")
    result = calibrate_manifest(folder / "manifest.json", window=None)
    assert result is not None
    text = (folder / "manifest.json").read_bytes()
    after = signing.verify_json(text, trusted(root))
    assert after.policy.threshold == result.policy.threshold != before.policy.threshold
