"""Crop and resize folded into the real imagenet edge model (OpenVINO PrePostProcessor) vs
cv2 before it, on the real smoke photos; and the cascade handing a folding edge model frames."""

import asyncio
import time

import cv2
import numpy as np
import pytest

from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.paths import edge_model_file, family_dir
from edgecascade.cloud.common.preprocessing import decode_image, kept_region, prepare
from edgecascade.edge.serving.runtime import EdgeModel
from edgecascade.edge.tools.samples import labelled_frames
from edgecascade.router.cascade.cascade import Cascade
from edgecascade.router.policy.policies import MaxProbabilityPolicy
from tests.unit.test_cascade_batch import EDGE_LOGITS
from tests.unit.test_cascade_routing import FakeCloud, manifest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def spec(imagenet_manifest: Manifest):
    return imagenet_manifest.edge.preprocessing


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [decode_image(frame.encoded) for frame in labelled_frames("imagenet", 6)]


def edge_model(spec) -> EdgeModel:
    return EdgeModel(edge_model_file(family_dir("imagenet"), "int8"), fold=spec)


def test_the_kept_region_resized_is_what_prepare_gives(spec, photos):
    for image in [photos[0], cv2.resize(photos[0], (1024, 683)), cv2.resize(photos[1], (640, 480))]:
        top, left, bottom, right = kept_region(*image.shape[:2], spec)
        assert abs((bottom - top) - (right - left)) <= 1  # square, as the crop is
        crop = cv2.resize(image[top:bottom, left:right], (spec.size, spec.size))
        assert np.abs(crop.astype(int) - prepare(image, spec)).mean() < 6


def test_folded_logits_match_the_cv2_path_on_real_photos(spec, photos):
    model = edge_model(spec)
    frames = [*photos, *(cv2.resize(p, (640, 480), interpolation=cv2.INTER_AREA) for p in photos)]

    async def both(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert await model.fold_ready(frame.shape)
        return await model.infer(frame), await model.infer(prepare(frame, spec))

    for frame in frames:
        folded, cv2_path = asyncio.run(both(frame))
        assert folded.argmax() == cv2_path.argmax()
        assert np.abs(folded - cv2_path).max() < 0.1 * np.ptp(cv2_path)
    assert model.fold_compiles == 2  # 512x512 and 640x480


def test_a_second_frame_of_a_shape_reuses_its_compiled_variant(spec, photos):
    model = edge_model(spec)

    async def run() -> None:
        await model.infer(photos[0])  # waits for the variant of its shape
        assert model.folded_shapes == [photos[0].shape]
        await model.infer(photos[0])
        await model.infer(photos[1])
        assert model.fold_compiles == 1 and model.folded_shapes == [photos[0].shape]

    asyncio.run(run())


def test_the_same_photo_answers_the_same_before_and_after_its_shape_is_known(spec, photos):
    """Issue 13 item 5: the first frames of a shape and the later ones take the same path, so
    the served logits do not depend on which frames came first (cv2's resize and OpenVINO's
    differ by up to 0.07 in confidence near a threshold)."""
    model = edge_model(spec)
    sizes = [(640, 480), (500, 375), (1024, 683)]
    frames = [
        cv2.resize(photo, size, interpolation=cv2.INTER_AREA)
        for photo in photos[:2]
        for size in sizes
    ]

    async def run() -> list[tuple[np.ndarray, np.ndarray]]:
        first = await asyncio.gather(*(model.infer(frame) for frame in frames))  # all at once
        later = [await model.infer(frame) for frame in frames]
        return list(zip(first, later))

    for first, later in asyncio.run(run()):
        np.testing.assert_array_equal(first, later)
    assert model.fold_compiles == len(sizes)


def test_a_model_that_does_not_fold_refuses_frames_of_another_size(spec, photos):
    model = EdgeModel(edge_model_file(family_dir("imagenet"), "int8"))
    with pytest.raises(ValueError, match="need folding on"):
        asyncio.run(model.infer(photos[0]))


def test_the_cascade_hands_a_folding_edge_model_one_batch_per_frame_shape():
    calls = []

    async def edge(batch):
        calls.append(batch.shape)
        return EDGE_LOGITS[batch[:, 0, 0, 0]]

    images = [np.full((32, 32), 0, np.uint8), np.full((20, 30), 1, np.uint8)]
    images.append(np.full((32, 32, 1), 2, np.uint8))
    cascade = Cascade(manifest(), edge, MaxProbabilityPolicy(0.5), FakeCloud(), edge_folds=True)
    answers = asyncio.run(cascade.classify_batch(images, received_at=time.perf_counter()))
    assert sorted(calls) == [(1, 20, 30, 1), (2, 32, 32, 1)]  # colour-converted, not resized
    assert [answers[i].edge_class_id for i in range(3)] == [1, 0, 1]
