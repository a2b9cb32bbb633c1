"""Shared integration fixtures: the fashion family, its test frames, a session-wide Triton
serving it, and a channel to the module's `agent`."""

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.paths import family_dir, manifest_path
from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.cloud.triton.repository import write_model
from edgecascade.cloud.triton.server import TritonServer
from edgecascade.edge.tools.samples import Frame, labelled_frames
from tests.helpers import Agent


@pytest.fixture(scope="session")
def fashion_manifest() -> Manifest:
    """The fashion family under the artifacts root, built first when missing."""
    if not manifest_path("fashion").exists():
        from edgecascade.cloud.build.builder import build_family
        from edgecascade.router.policy.calibration import calibrate_family

        build_family("fashion")
        calibrate_family("fashion")  # as `models build` does
    return Manifest.load(manifest_path("fashion"))


@pytest.fixture(scope="session")
def imagenet_manifest() -> Manifest:
    """The imagenet family under the artifacts root, built first when missing (needs torch)."""
    if not manifest_path("imagenet").exists():
        from edgecascade.cloud.build.builder import build_family
        from edgecascade.router.policy.calibration import calibrate_family

        build_family("imagenet")
        calibrate_family("imagenet")  # as `models build` does
    return Manifest.load(manifest_path("imagenet"))


@pytest.fixture(scope="session")
def fashion_repository(
    fashion_manifest: Manifest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A Triton model repository holding the fashion cloud model."""
    repository = tmp_path_factory.mktemp("triton")
    write_model(fashion_manifest, family_dir("fashion"), repository)
    return repository


@pytest.fixture(scope="session")
def triton(fashion_repository: Path) -> Iterator[TritonServer]:
    """Triton serving `fashion_repository` on free loopback ports for the whole session."""
    log = fashion_repository.parent / "triton.log"
    with TritonServer(fashion_repository, log_path=log) as server:
        yield server


@pytest.fixture(scope="session")
def frames(fashion_manifest: Manifest) -> list[Frame]:
    """The first 300 fashion test images, encoded as a camera would send them."""
    return labelled_frames("fashion", 300)


@pytest.fixture(scope="module")
def channel(agent: Agent) -> Iterator[grpc.Channel]:
    """A channel to the test module's own `agent` fixture."""
    with PLAINTEXT.channel(agent.address) as channel:
        yield channel
