import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgecascade.cloud.common.manifest import (
    Manifest,
    Preprocessing,
    sha256_file,
    write_family_folder,
)
from edgecascade.cloud.registry.store import CorruptBlob, NotFound, Registry

LABELS = ["cat", "dog", "bird"]
FILES = ("edge/model.xml", "edge/model.bin", "cloud/model.onnx")


def write_family(
    folder: Path, threshold: float = 0.5, edge_bin: bytes = b"edge 1", cloud_onnx: bytes = b"c1"
) -> Path:
    """A family folder as `models build` writes it, with opaque model bytes."""
    pre = Preprocessing(color="rgb", size=8, resize_short=8)
    files = dict(zip(FILES, (b"<xml/>", edge_bin, cloud_onnx)))
    write_family_folder(
        folder, "pets", files, LABELS, pre, threshold=threshold, created="2026-01-01T00:00:00+00:00"
    )
    return folder


def blobs(registry: Registry) -> set[str]:
    return {p.name for p in (registry.root / "blobs" / "sha256").iterdir()}


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


def test_first_publish_stores_blobs_once_and_becomes_current(
    registry: Registry, tmp_path: Path
) -> None:
    source = write_family(tmp_path / "build")
    published = registry.publish("pets", source)

    manifest = published.manifest
    assert published.created and published.changes == ("first version",)
    assert (manifest.version, manifest.edge.version, manifest.cloud.version) == (1, 1, 1)
    assert registry.current_version("pets") == 1 and registry.families() == ["pets"]
    assert manifest.edge.files == Manifest.load(source / "manifest.json").edge.files
    assert blobs(registry) == {sha256_file(source / rel) for rel in FILES}
    for rel in FILES:
        blob = registry.blob_path(sha256_file(source / rel))
        assert blob.read_bytes() == (source / rel).read_bytes()
        assert not os.access(blob, os.W_OK) or os.geteuid() == 0  # stored read-only
    assert registry.get("pets") == registry.get("pets", 1) == manifest


def test_unchanged_publish_creates_nothing(registry: Registry, tmp_path: Path) -> None:
    source = write_family(tmp_path / "build")
    registry.publish("pets", source)
    before = sorted(p for p in registry.root.rglob("*") if p.name != ".lock")

    again = registry.publish("pets", write_family(tmp_path / "rebuild"))  # same bytes, new folder
    assert not again.created and again.manifest.version == 1
    assert sorted(p for p in registry.root.rglob("*") if p.name != ".lock") == before


def test_versions_bump_only_for_the_model_that_changed(registry: Registry, tmp_path: Path) -> None:
    first = registry.publish("pets", write_family(tmp_path / "b1")).manifest
    edge2 = registry.publish("pets", write_family(tmp_path / "b2", edge_bin=b"edge 2"))
    assert edge2.changes == ("edge model",)
    m = edge2.manifest
    assert (m.version, m.edge.version, m.cloud.version) == (2, 2, 1)
    assert m.cloud.files == first.cloud.files and m.edge.files != first.edge.files
    assert len(blobs(registry)) == len(FILES) + 1  # only the new edge .bin was stored

    cloud2 = registry.publish(
        "pets", write_family(tmp_path / "b3", edge_bin=b"edge 2", cloud_onnx=b"c2")
    ).manifest
    assert (cloud2.version, cloud2.edge.version, cloud2.cloud.version) == (3, 2, 2)

    recalibrated = registry.publish(
        "pets",
        write_family(tmp_path / "b4", 0.7, edge_bin=b"edge 2", cloud_onnx=b"c2"),
    )
    m = recalibrated.manifest
    assert recalibrated.changes == ("policy",)
    assert (m.version, m.edge.version, m.cloud.version, m.policy.threshold) == (4, 2, 2, 0.7)
    assert [h.version for h in registry.history("pets")] == [1, 2, 3, 4]
    assert registry.families() == ["pets"]
    assert registry.get("pets", 1).edge.version == 1  # published manifests never change
    assert registry.current_version("pets") == 4


def test_tampered_source_is_refused_before_anything_is_stored(
    registry: Registry, tmp_path: Path
) -> None:
    source = write_family(tmp_path / "build")
    (source / "edge" / "model.bin").write_bytes(b"flipped after the build")
    with pytest.raises(ValueError, match="edge/model.bin has sha256"):
        registry.publish("pets", source)
    assert registry.versions("pets") == [] and not (registry.root / "blobs").exists()


def test_corrupted_blob_is_detected_and_healed_by_publishing_again(
    registry: Registry, tmp_path: Path
) -> None:
    source = write_family(tmp_path / "build")
    manifest = registry.publish("pets", source).manifest
    sha = manifest.cloud.files["cloud/model.onnx"]
    blob = registry.blob_path(sha)
    blob.chmod(0o644)
    blob.write_bytes(b"bit rot")

    with pytest.raises(CorruptBlob, match=f"artifact {sha} is corrupted"):
        registry.verify_blob(sha)
    with pytest.raises(CorruptBlob):
        registry.checkout(manifest, tmp_path / "out")
    with pytest.raises(CorruptBlob):
        registry.activate("pets", 1)

    assert not registry.publish("pets", source).created  # same models: no new version ...
    assert registry.verify_blob(sha) == blob  # ... but the blob is intact again


def test_staged_version_becomes_current_only_when_activated(
    registry: Registry, tmp_path: Path
) -> None:
    registry.publish("pets", write_family(tmp_path / "b1"))
    staged = registry.publish(
        "pets", write_family(tmp_path / "b2", cloud_onnx=b"c2"), activate=False
    ).manifest
    assert staged.version == 2 and registry.current_version("pets") == 1
    assert registry.current_versions() == {"pets": 1}

    registry.activate("pets", 2)
    assert [m.version for m in registry.in_use("pets", keep=2)] == [2, 1]
    registry.activate("pets", 1)  # rollback
    assert registry.current_version("pets") == 1
    assert [m.version for m in registry.in_use("pets", keep=2)] == [1, 2]
    assert [m.version for m in registry.in_use("pets", keep=1)] == [1]
    log = (registry.root / "families" / "pets" / "activations.jsonl").read_text().splitlines()
    assert [json.loads(line)["version"] for line in log] == [1, 2, 1]


def test_checkout_lays_out_a_verified_family_folder(registry: Registry, tmp_path: Path) -> None:
    source = write_family(tmp_path / "build")
    manifest = registry.publish("pets", source).manifest
    out = registry.checkout(manifest, tmp_path / "out")
    Manifest.load(out / "manifest.json").verify(out)
    assert {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} == {
        *FILES,
        "manifest.json",
    }


def test_unknown_names_and_malformed_input(registry: Registry, tmp_path: Path) -> None:
    registry.publish("pets", write_family(tmp_path / "build"))
    with pytest.raises(NotFound, match="family 'birds' has no published version"):
        registry.get("birds")
    with pytest.raises(NotFound, match=r"no version 7 \(published: \[1\]\)"):
        registry.get("pets", 7)
    with pytest.raises(NotFound, match="no artifact with sha256"):
        registry.verify_blob("0" * 64)
    with pytest.raises(ValueError, match="64 lowercase hex"):
        registry.blob_path("../../etc/passwd")
    with pytest.raises(ValueError, match="family name"):
        registry.get("../pets")
    with pytest.raises(ValueError, match="holds family 'pets', not 'birds'"):
        registry.publish("birds", tmp_path / "build")
    with pytest.raises(NotFound, match="no built family"):
        registry.publish("pets", tmp_path / "nowhere")


PUBLISHER = """
import sys
import time
from pathlib import Path
from edgecascade.cloud.registry.store import Registry
root, go, builds = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
registry = Registry(root)
while not go.exists():
    time.sleep(0.001)
for build in builds:
    print(registry.publish("pets", Path(build)).manifest.version)
"""


def test_publishers_in_separate_processes_at_once_each_get_a_version_of_their_own(
    registry: Registry, tmp_path: Path
) -> None:
    """Several hosts publish into one shared registry at the same time (gateways and roll-out
    pods on a ReadWriteMany volume): every publication gets its own version, none fails."""
    processes, per_process = 4, 5
    go = tmp_path / "go"
    publishers = []
    for p in range(processes):
        builds = [
            str(write_family(tmp_path / f"b{p}-{i}", edge_bin=f"edge {p}-{i}".encode()))
            for i in range(per_process)
        ]
        publishers.append(
            subprocess.Popen(
                [sys.executable, "-c", PUBLISHER, str(registry.root), str(go), *builds],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    go.touch()  # all start publishing together
    versions = []
    for publisher in publishers:
        out, err = publisher.communicate(timeout=120)
        assert publisher.returncode == 0, err
        versions += [int(v) for v in out.split()]
    total = processes * per_process
    assert sorted(versions) == list(range(1, total + 1))
    history = registry.history("pets")
    assert [m.version for m in history] == list(range(1, total + 1))
    assert len({m.edge.files["edge/model.bin"] for m in history}) == total  # each its own build
    assert [m.edge.version for m in history] == list(range(1, total + 1))
    activations = (registry.root / "families" / "pets" / "activations.jsonl").read_text()
    assert len(activations.splitlines()) == total
    assert registry.current_version("pets") in versions
