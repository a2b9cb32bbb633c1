"""Artifact names in a manifest are plain relative names: none leads outside its folder,
whether the manifest is parsed, checked out of the registry or downloaded by an edge."""

import asyncio
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from edgecascade.cloud.common.manifest import Manifest, artifact_path, check_artifact_name
from edgecascade.cloud.registry.store import Registry
from edgecascade.router.sync.client import InvalidManifest, _manifest, fetch_manifest_files
from edgecascade.v1 import model_sync_pb2 as pb
from tests.unit.test_registry import write_family

BAD_NAMES = [
    "/etc/cron.d/evil",
    "../escape.bin",
    "edge/../../escape.bin",
    "..",
    ".",
    "",
    "edge//model.bin",
    "edge/./model.bin",
    "edge/model\x00.bin",
    "edge\\..\\model.bin",
    "edge/.hidden",
    "-rf",
    "x" * 200,
    "/".join(["a"] * 20),
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_unsafe_artifact_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        check_artifact_name(name)


@pytest.mark.parametrize("name", ["model.bin", "edge/model.xml", "edge/fp32/model.bin"])
def test_plain_artifact_names_are_accepted(name: str) -> None:
    assert check_artifact_name(name) == name


def manifest_json(source: Path, **files: str) -> str:
    """The source family's manifest with the edge files replaced by `files` (name -> sha)."""
    data = json.loads((source / "manifest.json").read_text())
    data["edge"]["files"] = dict(files)
    return json.dumps(data)


@pytest.mark.parametrize("name", ["/tmp/evil.bin", "../../evil.bin", "a/../b", "..", "", "a\x00b"])
def test_a_manifest_naming_a_path_does_not_parse(tmp_path: Path, name: str) -> None:
    source = write_family(tmp_path / "build")
    with pytest.raises(ValidationError, match="artifact name"):
        Manifest.model_validate_json(manifest_json(source, **{name: "0" * 64}))


def test_model_and_family_names_are_plain(tmp_path: Path) -> None:
    source = write_family(tmp_path / "build")
    data = json.loads((source / "manifest.json").read_text())
    for patch in ({"family": "../x"}, {"edge": {**data["edge"], "name": "../../x"}}):
        with pytest.raises(ValidationError):
            Manifest.model_validate({**data, **patch})


def test_a_symbolic_link_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    folder, outside = tmp_path / "cache", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    (folder / "edge").symlink_to(outside)
    with pytest.raises(ValueError, match="outside"):
        artifact_path(folder, "edge/model.bin")
    assert artifact_path(folder, "cloud/model.onnx") == folder / "cloud" / "model.onnx"


def unsafe(source: Path, name: str) -> Manifest:
    """The source manifest with an unsafe edge artifact, built without validation (as a
    tampered copy would reach code that does not parse it again)."""
    manifest = Manifest.load(source / "manifest.json")
    sha = next(iter(manifest.edge.files.values()))
    edge = manifest.edge.model_copy(update={"files": {name: sha}})
    return manifest.model_copy(update={"edge": edge})


def test_checkout_refuses_before_writing(tmp_path: Path) -> None:
    source = write_family(tmp_path / "build")
    registry = Registry(tmp_path / "registry")
    registry.publish("pets", source)
    dest = tmp_path / "deep" / "out"
    with pytest.raises(ValueError, match="artifact name"):
        registry.checkout(unsafe(source, "../../escaped.bin"), dest)
    assert not (tmp_path / "escaped.bin").exists()


class NoStub:
    """A ModelSync stub that fails the test if anything is fetched."""

    def FetchArtifact(self, *args, **kwargs):  # noqa: N802 - the gRPC method's name
        raise AssertionError("an artifact was fetched")


@pytest.mark.parametrize("absolute", [False, True])
def test_download_refuses_before_any_request_or_write(tmp_path: Path, absolute: bool) -> None:
    source = write_family(tmp_path / "build")
    folder = tmp_path / "edge-cache" / "pets" / "2"
    name = str(tmp_path / "escaped.bin") if absolute else "../../../escaped.bin"
    with pytest.raises(ValueError, match="artifact name"):
        asyncio.run(fetch_manifest_files(NoStub(), unsafe(source, name), folder))
    assert not (tmp_path / "escaped.bin").exists()
    assert not folder.exists()


def test_the_client_refuses_a_served_manifest_with_a_path(tmp_path: Path) -> None:
    import hashlib

    source = write_family(tmp_path / "build")
    text = manifest_json(source, **{"../../evil.bin": "0" * 64})
    response = pb.ManifestResponse(
        family="pets",
        version=1,
        manifest_json=text,
        manifest_sha256=hashlib.sha256(text.encode()).hexdigest(),
    )
    with pytest.raises(InvalidManifest, match="artifact name") as caught:
        _manifest(response, None)  # signatures aside: the path alone is refused
    assert caught.value.version == 1
