import os
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from edgecascade.cloud.common.manifest import (
    Manifest,
    ModelSpec,
    Preprocessing,
    RoutingPolicy,
    labels_sha256,
    sha256_file,
)
from edgecascade.cloud.triton.repository import (
    read_config,
    set_version_policy,
    version_folders,
    write_model,
    write_repository,
)

LABELS = ["cat", "dog", "bird"]


def make_family(root: Path, family: str = "pets", version: int = 1, size: int = 32) -> Manifest:
    """A family folder whose 'ONNX' is opaque bytes: the writer only copies and hashes it."""
    folder = root / family
    (folder / "cloud").mkdir(parents=True, exist_ok=True)
    onnx = folder / "cloud" / "model.onnx"
    onnx.write_bytes(f"onnx {family} v{version}".encode())
    pre = Preprocessing(color="rgb", size=size, resize_short=size)
    manifest = Manifest(
        family=family,
        version=version,
        created="2026-01-01T00:00:00Z",
        labels=LABELS,
        labels_sha256=labels_sha256(LABELS),
        edge=ModelSpec(
            name=f"{family}_edge", version=version, precision="int8", files={}, preprocessing=pre
        ),
        cloud=ModelSpec(
            name=f"{family}_cloud",
            version=version,
            precision="fp32",
            files={"cloud/model.onnx": sha256_file(onnx)},
            preprocessing=pre,
        ),
        policy=RoutingPolicy(threshold=0.5),
    )
    manifest.save(folder / "manifest.json")
    return manifest


def test_cpu_config_parses_back_with_dims_from_manifest(tmp_path: Path) -> None:
    manifest = make_family(tmp_path, size=40)
    model_dir = write_model(manifest, tmp_path / "pets", tmp_path / "repo")

    config = read_config(model_dir)
    assert model_dir == tmp_path / "repo" / "pets_cloud"
    assert config.name == "pets_cloud" and config.backend == "python" and not config.platform
    assert config.max_batch_size >= 8 and config.dynamic_batching.preferred_batch_size
    (image,) = config.input
    assert (image.name, image.data_type, list(image.dims)) == ("image", mc.TYPE_UINT8, [40, 40, 3])
    (logits,) = config.output
    assert (logits.name, logits.data_type, list(logits.dims)) == ("logits", mc.TYPE_FP32, [3])
    assert (model_dir / logits.label_filename).read_text().splitlines() == LABELS
    assert [g.kind for g in config.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
    site_packages = config.parameters["site_packages"].string_value
    assert site_packages and all(Path(p).is_dir() for p in site_packages.split(os.pathsep))
    assert sorted(p.name for p in (model_dir / "1").iterdir()) == ["model.onnx", "model.py"]
    assert "class TritonPythonModel" in (model_dir / "1" / "model.py").read_text()


def test_gpu_variant_is_onnxruntime_on_gpu_without_python(tmp_path: Path) -> None:
    manifest = make_family(tmp_path)
    model_dir = write_model(manifest, tmp_path / "pets", tmp_path / "repo", gpu=True)

    config = read_config(model_dir)
    assert config.platform == "onnxruntime_onnx" and not config.backend
    assert [g.kind for g in config.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    assert set(config.parameters) == {"labels_sha256"}  # no python-backend parameters
    assert config.parameters["labels_sha256"].string_value == manifest.labels_sha256
    assert [p.name for p in (model_dir / "1").iterdir()] == ["model.onnx"]
    assert list(config.input[0].dims) == [32, 32, 3]


def test_version_policy_keeps_older_versions(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_model(make_family(tmp_path, version=1), tmp_path / "pets", repo)
    model_dir = write_model(make_family(tmp_path, version=3), tmp_path / "pets", repo)

    assert list(read_config(model_dir).version_policy.specific.versions) == [1, 3]
    assert (model_dir / "1" / "model.onnx").read_bytes() == b"onnx pets v1"
    assert (model_dir / "3" / "model.onnx").read_bytes() == b"onnx pets v3"


def test_write_repository_writes_every_family_and_checks_hashes(tmp_path: Path) -> None:
    manifests = [make_family(tmp_path, "pets"), make_family(tmp_path, "birds")]
    dirs = write_repository(manifests, tmp_path / "repo", root=tmp_path)
    assert [d.name for d in dirs] == ["pets_cloud", "birds_cloud"]

    (tmp_path / "pets" / "cloud" / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="sha256"):
        write_repository(manifests, tmp_path / "repo", root=tmp_path)


def test_set_version_policy_narrows_what_triton_serves(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for version in (1, 2, 3):
        model_dir = write_model(make_family(tmp_path, version=version), tmp_path / "pets", repo)
    assert version_folders(model_dir) == [1, 2, 3]

    set_version_policy(model_dir, [3, 2, 3])
    config = read_config(model_dir)
    assert list(config.version_policy.specific.versions) == [2, 3]
    assert config.name == "pets_cloud" and config.backend == "python"  # the rest is unchanged
    assert version_folders(model_dir) == [1, 2, 3]  # folders go only once Triton unloaded them
