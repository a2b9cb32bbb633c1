"""Signed manifests and the model follower, end to end: a real gateway serving a registry over
ModelSync, a real edge agent following it.

- A manifest altered after signing and one signed by a stranger's key are refused while the agent
  keeps serving the pair it had; GetStatus, the metrics and the log say why.
- An agent started before its family is published retries NOT_FOUND with back-off and picks up
  the versions published later; a malformed manifest does not stop it (issue 12 item 6).
"""

import base64
import json
import time
from pathlib import Path

import pytest

from edgecascade.cloud.common import signing
from edgecascade.cloud.common.launcher import wait_until
from edgecascade.cloud.common.ports import free_port
from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.cloud.registry.signing_keys import dev_key
from edgecascade.cloud.registry.store import Registry
from edgecascade.router.gateway.process import GatewayProcess
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc
from tests.family_files import copy_family
from tests.helpers import classify, following_edge, metric
from tests.integration.test_model_updates import new_cloud_model, new_edge_model, status

pytestmark = pytest.mark.integration


def make_current(registry: Registry, version: int, manifest: dict | None = None) -> None:
    """Point CURRENT at `version` (writing `manifest` as it first), as someone with write
    access to the registry folder would, behind `models publish`'s back."""
    folder = registry.root / "families" / "fashion"
    if manifest is not None:
        path = folder / str(version) / "manifest.json"
        path.parent.mkdir(exist_ok=True)
        path.unlink(missing_ok=True)
        path.write_text(json.dumps(manifest, indent=2))
    (folder / "CURRENT").write_text(f"{version}\n")


def signed_dict(manifest: dict, key) -> dict:
    """`manifest` (any JSON object, valid or not) signed by `key`."""
    signature = key.sign(signing.canonical_bytes(manifest))
    return manifest | {
        "signature": {
            "key_id": signing.key_id(key.public_key()),
            "ed25519": base64.b64encode(signature).decode(),
        }
    }


def test_altered_and_untrusted_manifests_are_refused_and_the_old_pair_serves(
    fashion_manifest, triton, frames, tmp_path: Path
) -> None:
    ours = signing.load_private_key(signing.generate_key(tmp_path / "keys", "registry")[0])
    stranger = signing.load_private_key(signing.generate_key(tmp_path / "evil", "stranger")[0])
    build = copy_family(tmp_path / "build")
    registry = Registry(tmp_path / "registry")
    v1 = registry.publish("fashion", build, signing_key=ours).manifest
    metrics_port = free_port()
    log = tmp_path / "edge.log"
    with (
        GatewayProcess([triton.grpc_url], tmp_path / "gateway.log", registry=registry.root) as gw,
        # nothing built in its artifacts: it starts from the registry
        following_edge(
            None,
            gw.url,
            tmp_path / "edge-artifacts",
            log,
            *("--metrics-port", str(metrics_port)),
            trusted_keys=tmp_path / "keys",
        ) as edge,
        PLAINTEXT.channel(edge.address) as channel,
    ):
        stub = pb_grpc.CascadeStub(channel)
        assert status(edge.address).manifest_version == v1.version
        before = classify(stub, frames[0])
        url = f"http://127.0.0.1:{metrics_port}/metrics"

        # v2, signed by us, then changed (threshold 0: never escalate) after signing.
        new_edge_model(build)
        v2 = registry.publish("fashion", build, signing_key=ours, activate=False).manifest
        altered = json.loads(v2.model_dump_json())
        altered["policy"]["threshold"] = 0.0
        make_current(registry, v2.version, altered)
        assert wait_until(lambda: f"v{v2.version}" in status(edge.address).update_error, 30)
        s = status(edge.address)
        assert "altered after signing" in s.update_error
        assert s.manifest_version == v1.version and s.versions.edge == v1.edge.key
        assert metric(url, "edgecascade_update_failures_total", reason="refused") == 1

        # v3, a real new version but signed by a key this agent does not trust.
        new_cloud_model(build)
        v3 = registry.publish("fashion", build, signing_key=stranger).manifest
        assert wait_until(lambda: f"v{v3.version}" in status(edge.address).update_error, 30)
        s = status(edge.address)
        assert "signed by key" in s.update_error and "not trusted here" in s.update_error
        assert signing.key_id(ours.public_key()) in s.update_error  # the trusted ones, named
        assert s.manifest_version == v1.version and s.versions.edge == v1.edge.key
        assert metric(url, "edgecascade_update_failures_total", reason="refused") == 2

        after = classify(stub, frames[0])
        assert after.versions.edge == v1.edge.key
        assert after.top_k[0].class_id == before.top_k[0].class_id
        cache = tmp_path / "edge-artifacts" / "edge-cache" / "fashion"
        assert sorted(p.name for p in cache.iterdir()) == [str(v1.version)]  # nothing fetched

        # Signed by us, it is applied.
        registry.activate("fashion", v1.version)  # CURRENT moves on from v3...
        time.sleep(1.0)  # ...and ModelSync (polling every 0.2 s) sees it, before it comes back
        make_current(registry, v3.version, signed_dict(json.loads(v3.model_dump_json()), ours))
        assert wait_until(lambda: status(edge.address).manifest_version == v3.version, 60)
        assert status(edge.address).update_error == ""
    text = log.read_text()
    assert "altered after signing" in text and "not trusted here" in text


def test_the_follower_waits_for_its_family_and_survives_a_malformed_manifest(
    fashion_manifest, triton, tmp_path: Path
) -> None:
    artifacts = tmp_path / "edge-artifacts"
    copy_family(artifacts / "fashion")  # a local build, signed by the development key
    build = copy_family(tmp_path / "build")
    registry = Registry(tmp_path / "registry")
    metrics_port = free_port()
    log = tmp_path / "edge.log"
    with (
        GatewayProcess([triton.grpc_url], tmp_path / "gateway.log", registry=registry.root) as gw,
        # trusting the development key, which models publish signs with
        following_edge(None, gw.url, artifacts, log, "--metrics-port", str(metrics_port)) as edge,
    ):
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        local = status(edge.address).manifest_version
        # Nothing published yet: NOT_FOUND, reported, retried.
        assert wait_until(lambda: "NOT_FOUND" in status(edge.address).update_error, 15)
        assert wait_until(
            lambda: metric(url, "edgecascade_update_failures_total", reason="watch") >= 2, 15
        )
        v1 = registry.publish("fashion", build).manifest
        new_edge_model(build)
        v2 = registry.publish("fashion", build).manifest
        assert v2.version > local
        assert wait_until(lambda: status(edge.address).manifest_version == v2.version, 30)
        assert status(edge.address).update_error == ""

        # A manifest without labels (signed: the registry's key is trusted) is refused...
        broken = json.loads(v2.model_dump_json())
        del broken["labels"]
        broken["version"] = v2.version + 1
        make_current(registry, broken["version"], signed_dict(broken, dev_key()))
        assert wait_until(lambda: "labels" in status(edge.address).update_error, 30)
        assert status(edge.address).manifest_version == v2.version
        # ...and the follower goes on: the next good version (a rollback to v1) is applied.
        registry.activate("fashion", v1.version)
        assert wait_until(lambda: status(edge.address).manifest_version == v1.version, 30)
        assert status(edge.address).update_error == ""
    text = log.read_text()
    assert "NOT_FOUND" in text and "update not applied (watch)" in text
    assert "update not applied (refused)" in text
