"""A manifest whose artifact names are paths (absolute, `../`), with reversed labels and
threshold 0, put in the registry behind the tools' back and served by the real ModelSync of a
real gateway: the following edge refuses it before writing anything, says why in GetStatus,
keeps answering with the pair it had, and still applies the next good version."""

import asyncio
import base64
import hashlib
import json
from pathlib import Path

import grpc
import pytest

from edgecascade.cloud.common import signing
from edgecascade.cloud.common.launcher import wait_until
from edgecascade.cloud.common.manifest import labels_sha256
from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.cloud.registry.signing_keys import dev_key
from edgecascade.cloud.registry.store import Registry
from edgecascade.edge.tools.samples import labelled_frames
from edgecascade.router.sync.client import InvalidManifest, get_manifest
from edgecascade.v1 import cascade_pb2 as pb
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc
from edgecascade.v1 import model_sync_pb2 as sync_pb
from edgecascade.v1 import model_sync_pb2_grpc as sync_grpc
from tests.family_files import copy_family
from tests.helpers import following_edge
from tests.integration.test_model_updates import new_edge_model, serving_v1, status

pytestmark = pytest.mark.integration


def plant(registry: Registry, version: int, manifest: dict) -> None:
    """Write `manifest` as `version` and make it current, as someone with write access to the
    registry folder (not `models publish`, which refuses it) would."""
    folder = registry.root / "families" / "fashion"
    (folder / str(version)).mkdir()
    (folder / str(version) / "manifest.json").write_text(json.dumps(manifest, indent=2))
    (folder / "CURRENT").write_text(f"{version}\n")


def test_a_manifest_with_paths_is_refused_and_the_old_pair_keeps_serving(
    fashion_manifest, tmp_path: Path
) -> None:
    build = copy_family(tmp_path / "build")
    registry = Registry(tmp_path / "registry")
    artifacts = tmp_path / "edge-artifacts"
    frame = labelled_frames("fashion", 1)[0]
    with serving_v1(tmp_path, registry, build) as (repository, triton, gateway, v1):
        new_edge_model(build)
        v2 = registry.publish("fashion", build, activate=False).manifest  # good, not current
        with (
            following_edge(gateway.url, gateway.url, artifacts, tmp_path / "edge.log") as edge,
            PLAINTEXT.channel(edge.address) as channel,
        ):
            stub = pb_grpc.CascadeStub(channel)
            assert wait_until(lambda: status(edge.address).manifest_version == v1.version, 30)
            before = stub.Classify(pb.ClassifyRequest(encoded_image=frame.encoded), timeout=10)
            top = (before.top_k[0].class_id, before.top_k[0].name)
            assert top[1] == v1.labels[top[0]]

            evil = json.loads(v1.model_dump_json())
            edge_sha = v1.edge.files["edge/model.bin"]
            absolute, climbing = tmp_path / "absolute.bin", tmp_path / "climbed.bin"
            evil["version"] = 3
            evil["edge"]["files"] = {
                **evil["edge"]["files"],
                str(absolute): edge_sha,
                "../../../../climbed.bin": edge_sha,
            }
            evil["labels"] = evil["labels"][::-1]
            evil["labels_sha256"] = labels_sha256(evil["labels"])
            evil["policy"]["threshold"] = 0.0
            # signed with the registry's own key (stolen): the artifact names are still refused
            key = dev_key()
            evil["signature"] = {
                "key_id": signing.key_id(key.public_key()),
                "ed25519": base64.b64encode(key.sign(signing.canonical_bytes(evil))).decode(),
            }
            plant(registry, 3, evil)

            assert wait_until(lambda: status(edge.address).update_error != "", 30)
            s = status(edge.address)
            assert "v3" in s.update_error and "artifact name" in s.update_error
            assert s.manifest_version == v1.version
            assert (s.versions.edge, s.versions.cloud) == (v1.edge.key, v1.cloud.key)
            assert not absolute.exists() and not climbing.exists()
            assert sorted(p.name for p in (artifacts / "edge-cache" / "fashion").iterdir()) == [
                str(v1.version)
            ]
            after = stub.Classify(pb.ClassifyRequest(encoded_image=frame.encoded), timeout=10)
            assert (after.top_k[0].class_id, after.top_k[0].name) == top
            assert after.versions.edge == v1.edge.key

            # The agent still follows: the next good version is applied.
            registry.activate("fashion", v2.version)
            assert wait_until(lambda: status(edge.address).manifest_version == v2.version, 60)
            assert status(edge.address).update_error == ""

        # A client asking for v3 directly is refused the same way.
        async def ask() -> None:
            async with PLAINTEXT.aio_channel(gateway.url) as aio:
                await get_manifest(sync_grpc.ModelSyncStub(aio), "fashion", 3)

        with pytest.raises(InvalidManifest, match="artifact name"):
            asyncio.run(ask())

        # ModelSync serves nothing outside the registry: not a blob linked out of it, not a
        # family name that is a path.
        outside = tmp_path / "secret"
        outside.write_bytes(b"secret")
        sha = hashlib.sha256(b"secret").hexdigest()
        (registry.root / "blobs" / "sha256" / sha).symlink_to(outside)
        with PLAINTEXT.channel(gateway.url) as channel:
            sync = sync_grpc.ModelSyncStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                list(sync.FetchArtifact(sync_pb.FetchArtifactRequest(sha256=sha), timeout=10))
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "outside the registry" in caught.value.details()
            assert str(tmp_path) not in caught.value.details()
            for family in ("../../etc", "/etc"):
                with pytest.raises(grpc.RpcError) as caught:
                    sync.GetManifest(sync_pb.GetManifestRequest(family=family), timeout=10)
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                request = sync_pb.WatchManifestsRequest(family=family)
                with pytest.raises(grpc.RpcError) as caught:
                    list(sync.WatchManifests(request, timeout=10))
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
