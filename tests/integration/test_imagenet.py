"""The imagenet family through the whole cascade: EfficientNet-Lite0 INT8 at the edge,
EfficientNet-Lite2 on Triton, on the 20 labelled smoke photos."""

import pytest

from edgecascade.cloud.common.paths import family_dir
from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.cloud.triton.repository import write_model
from edgecascade.cloud.triton.server import TritonServer
from edgecascade.edge.tools.process import EdgeProcess
from edgecascade.edge.tools.samples import labelled_frames
from edgecascade.v1 import cascade_pb2 as pb
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration


def test_smoke_photos_at_both_tiers(imagenet_manifest, tmp_path):
    repository = tmp_path / "repository"
    write_model(imagenet_manifest, family_dir("imagenet"), repository)
    frames = labelled_frames("imagenet")
    assert len(frames) == 20
    answers = {}
    with TritonServer(repository, log_path=tmp_path / "triton.log") as triton:
        for threshold in ("0", "1.0"):  # everything at the edge, then everything escalated
            log = tmp_path / f"edge-{threshold}.log"
            with EdgeProcess("imagenet", triton.grpc_url, log, "--threshold", threshold) as edge:
                with PLAINTEXT.channel(edge.address) as channel:
                    stub = pb_grpc.CascadeStub(channel)
                    answers[threshold] = [
                        stub.Classify(pb.ClassifyRequest(encoded_image=f.encoded), timeout=30)
                        for f in frames
                    ]
    edge_answers, cloud_answers = answers["0"], answers["1.0"]
    assert all(r.tier == pb.EDGE for r in edge_answers)
    assert all(r.tier == pb.CLOUD and not r.degraded for r in cloud_answers)
    assert all(r.versions.cloud == imagenet_manifest.cloud.key for r in cloud_answers)
    edge_right = sum(r.top_k[0].class_id == f.label for r, f in zip(edge_answers, frames))
    cloud_right = sum(r.top_k[0].class_id == f.label for r, f in zip(cloud_answers, frames))
    assert edge_right >= 15 and cloud_right >= 15, (edge_right, cloud_right)
    assert (
        edge_answers[0].top_k[0].name == imagenet_manifest.labels[edge_answers[0].top_k[0].class_id]
    )
