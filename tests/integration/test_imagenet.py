"""The imagenet family through the whole cascade: EfficientNet-Lite0 INT8 at the edge,
EfficientNet-Lite2 on Triton, on the 20 labelled smoke photos."""

import cv2
import pytest

from edgecascade.cloud.build.families import FAMILIES
from edgecascade.cloud.common.paths import family_dir
from edgecascade.cloud.common.preprocessing import decode_image
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


def test_a_photo_answers_the_same_as_the_first_and_as_a_later_frame_of_its_size(tmp_path):
    """Issue 13 item 5, through the agent: frames of a new size wait for the variant of the
    edge model that folds their crop and resize, so the first frame of a size and the later
    ones get the very same confidence."""
    photos = [decode_image(f.encoded) for f in labelled_frames("imagenet", 3)]
    sizes = [(640, 480), (500, 375)]
    encoded = [
        cv2.imencode(".png", cv2.resize(photo, size, interpolation=cv2.INTER_AREA))[1].tobytes()
        for size in sizes
        for photo in photos
    ]
    with EdgeProcess("imagenet", None, tmp_path / "edge.log", "--threshold", "0") as edge:
        with PLAINTEXT.channel(edge.address) as channel:
            stub = pb_grpc.CascadeStub(channel)
            rounds = [
                [stub.Classify(pb.ClassifyRequest(encoded_image=e), timeout=30) for e in encoded]
                for _ in range(2)
            ]
    for first, later in zip(*rounds):
        assert first.edge_confidence == later.edge_confidence
        assert [(c.class_id, c.score) for c in first.top_k] == [
            (c.class_id, c.score) for c in later.top_k
        ]


def test_the_threshold_is_calibrated_and_says_on_what(imagenet_manifest):
    """Issue 13 item 6: imagenet's threshold comes from calibration for its declared target (an
    escalation budget), never the family default, and the manifest says what it was set on."""
    notes = imagenet_manifest.notes
    assert imagenet_manifest.policy.threshold != FAMILIES["imagenet"].threshold
    assert imagenet_manifest.policy.temperature != 1.0
    assert "at most 20.0% escalated" in notes["threshold"]
    assert "crops" in notes["calibration_split"] and "smoke photos" in notes["calibration_split"]
