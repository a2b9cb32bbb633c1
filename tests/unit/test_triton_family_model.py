"""The family model in the Triton repository (no server): its config states the edge agent's
inputs and outputs, each manifest version gets a folder with its pair, and the request mapping
decodes, prepares and answers as the cascade does."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2 as mc

from edgecascade.cloud.common.manifest import Manifest, Preprocessing
from edgecascade.cloud.common.preprocessing import InvalidImage, decode_image, prepare
from edgecascade.cloud.triton import family
from edgecascade.cloud.triton.repository import (
    FAMILY_MODEL_SOURCE,
    read_config,
    write_model,
    write_repository,
)
from tests.unit.test_triton_repository import LABELS, make_family

SPEC = Preprocessing(color="gray", size=8, resize_short=8)


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def test_write_repository_adds_the_family_model_beside_the_cloud_model(tmp_path: Path) -> None:
    manifest = make_family(tmp_path)
    write_repository([manifest], tmp_path / "repo", root=tmp_path)
    model_dir = tmp_path / "repo" / "pets"
    config = read_config(model_dir)
    assert config.name == "pets" and config.backend == "python" and config.max_batch_size == 0
    assert list(config.version_policy.specific.versions) == [1]
    types = {t.name: (t.data_type, list(t.dims)) for t in [*config.input, *config.output]}
    assert types == {
        "image": (mc.TYPE_STRING, [-1]),
        "pixels": (mc.TYPE_UINT8, [-1, -1, -1, -1]),
        "probabilities": (mc.TYPE_FP32, [-1, len(LABELS)]),
        "top1": (mc.TYPE_INT32, [-1]),
        "edge_confidence": (mc.TYPE_FP32, [-1]),
        "tier": (mc.TYPE_STRING, [-1]),
    }
    assert all(t.optional for t in config.input)
    assert config.parameters["cloud_model"].string_value == "pets_cloud:1"
    assert config.parameters["max_batch"].string_value == "64"
    assert (model_dir / "labels.txt").read_text().split() == LABELS
    version = model_dir / "1"
    assert (version / "model.py").read_text() == FAMILY_MODEL_SOURCE.read_text()
    assert Manifest.load(version / family.PAIR_FILE) == manifest


def test_each_manifest_version_answers_for_its_own_pair(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_repository([make_family(tmp_path, version=1)], repo, root=tmp_path)
    write_repository([make_family(tmp_path, version=2)], repo, root=tmp_path)
    assert list(read_config(repo / "pets").version_policy.specific.versions) == [1, 2]
    pairs = [Manifest.load(repo / "pets" / v / family.PAIR_FILE) for v in ("1", "2")]
    assert [p.cloud.key for p in pairs] == ["pets_cloud:1", "pets_cloud:2"]


def test_the_gpu_family_model_imports_the_image_s_edgecascade(tmp_path: Path) -> None:
    """On GPU the family model runs in the edgecascade Triton image: no local site folders."""
    manifest = make_family(tmp_path)
    write_repository([manifest], tmp_path / "cpu", root=tmp_path)
    write_repository([manifest], tmp_path / "gpu", gpu=True, root=tmp_path)
    cpu, gpu = read_config(tmp_path / "cpu" / "pets"), read_config(tmp_path / "gpu" / "pets")
    assert "site_packages" in cpu.parameters and "site_packages" not in gpu.parameters
    del cpu.parameters["site_packages"]
    assert cpu == gpu  # the same inputs, outputs, pair and instances
    assert (tmp_path / "gpu" / "pets" / "1" / "model.py").read_text() == (
        FAMILY_MODEL_SOURCE.read_text()
    )


def test_write_model_alone_writes_no_family_model(tmp_path: Path) -> None:
    write_model(make_family(tmp_path), tmp_path / "pets", tmp_path / "one")
    assert not (tmp_path / "one" / "pets").exists()


def test_encoded_images_are_decoded_and_prepared_as_the_edge_does() -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((8, 8), (12, 20, 3))]
    encoded = np.array([png(image) for image in images], dtype=np.object_)
    batch = family.prepared_images(encoded, None, SPEC, 4)
    expected = [prepare(decode_image(png(image)), SPEC) for image in images]
    np.testing.assert_array_equal(batch, np.stack(expected))
    assert batch.shape == (2, 8, 8, 1) and batch.dtype == np.uint8


def test_raw_pixels_are_prepared_and_checked() -> None:
    pixels = np.arange(2 * 16 * 16 * 3, dtype=np.uint32).astype(np.uint8).reshape(2, 16, 16, 3)
    batch = family.prepared_images(None, pixels, SPEC, 4)
    np.testing.assert_array_equal(batch[1], prepare(pixels[1], SPEC))
    with pytest.raises(InvalidImage, match="4 channels"):
        family.prepared_images(None, np.zeros((1, 8, 8, 4), np.uint8), SPEC, 4)


@pytest.mark.parametrize(
    ("image", "pixels", "message"),
    [
        (None, None, "send exactly one of 'image'"),
        (np.array([b"x"], object), np.zeros((1, 8, 8, 1), np.uint8), "send exactly one"),
        (np.array([b"not an image"], object), None, "cannot decode 12 bytes"),
        (np.array([b""], object), None, "empty image"),
        (np.array([b"x"] * 5, object), None, "batch of 5 images: send 1 to 4"),
        (np.array([], object), None, "batch of 0 images"),
    ],
)
def test_bad_requests_say_what_is_wrong(image, pixels, message: str) -> None:
    with pytest.raises(InvalidImage, match=message):
        family.prepared_images(image, pixels, SPEC, 4)


def test_the_answer_is_the_softmax_of_the_cloud_logits_from_the_cloud_tier() -> None:
    logits = np.array([[1.0, 2.0, 3.0], [1000.0, 0.0, -1000.0]], np.float32)
    answer = family.answer(logits)
    expected = np.exp([[-2.0, -1.0, 0.0]]) / np.exp([[-2.0, -1.0, 0.0]]).sum()
    np.testing.assert_allclose(answer["probabilities"][0], expected[0], rtol=1e-6)
    np.testing.assert_allclose(answer["probabilities"][1], [1.0, 0.0, 0.0])  # no overflow
    assert answer["probabilities"].dtype == np.float32
    assert answer["top1"].tolist() == [2, 0] and answer["top1"].dtype == np.int32
    assert np.isnan(answer["edge_confidence"]).all() and answer["edge_confidence"].shape == (2,)
    assert answer["tier"].tolist() == [b"cloud", b"cloud"]
    names = [name for name, _, _ in family.tensors(3)[1]]
    assert list(answer) == names
