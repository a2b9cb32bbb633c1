"""The cache of crop-and-resize variants of the real fashion edge model (issue 12): frames of
many distinct shapes keep it bounded, evicted variants (compiled model, infer requests, their
threads) are freed, and background compiles do not pile up."""

import asyncio
import gc
import os
import threading
import weakref

import numpy as np
import pytest

from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.paths import edge_model_file, family_dir
from edgecascade.edge.serving.runtime import (
    FOLD_CACHE_PIXELS,
    FOLD_COMPILES_QUEUED,
    FOLD_MAX_PIXELS,
    FOLD_VARIANTS,
    EdgeModel,
)

pytestmark = pytest.mark.integration
SHAPES = [(28 + i, 30 + 2 * i, 1) for i in range(30)]


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


def fashion_model(manifest: Manifest) -> EdgeModel:
    return EdgeModel(
        edge_model_file(family_dir("fashion"), "int8"), fold=manifest.edge.preprocessing
    )


def freed(model: EdgeModel) -> None:
    """Once the variants evicted so far are freed (on the compiling thread), and any cycle."""
    model._compiler.submit(gc.collect).result()


def test_thirty_frame_shapes_keep_the_variant_cache_bounded(fashion_manifest: Manifest):
    model = fashion_model(fashion_manifest)
    variants: list[weakref.ref] = []

    async def run() -> int:
        peak = 0
        for i, shape in enumerate(SHAPES):
            assert await model.fold_ready(shape)
            variants.append(weakref.ref(model._folded[shape]))
            logits = await model.infer(np.full(shape, i, np.uint8))  # through the variant
            assert np.isfinite(logits).all()
            freed(model)
            assert len(model._folded) <= FOLD_VARIANTS
            if i == FOLD_VARIANTS:
                baseline = threads()
            if i > FOLD_VARIANTS:
                peak = max(peak, threads() - baseline)
        # many new shapes at once: compiles queue up to the bound, and each frame is answered
        # once its shape's variant is compiled
        burst = [np.zeros((100 + i, 100, 1), np.uint8) for i in range(12)]
        answered = await asyncio.gather(*(model.infer(frame) for frame in burst))
        assert len(answered) == 12 and len(model._compiling) <= FOLD_COMPILES_QUEUED
        while model._compiling:
            await asyncio.wait(list(model._compiling.values()))
        return peak

    peak = asyncio.run(run())
    freed(model)
    alive = [ref() is not None for ref in variants]
    assert sum(alive) <= FOLD_VARIANTS and not any(alive[: -FOLD_VARIANTS - 2])
    assert model.fold_compiles == len(SHAPES) + 12
    assert peak <= 8, f"threads grew by {peak} while variants were evicted"


def test_variants_of_large_frames_are_bounded_by_their_pixels(fashion_manifest: Manifest):
    """A variant holds buffers of its frame size (~9 MB per megapixel here): eight 1080p ones
    kept 160 MB. Fewer than FOLD_VARIANTS large shapes already fill FOLD_CACHE_PIXELS, and the
    least recently used go, freed."""
    model = fashion_model(fashion_manifest)
    side = int(FOLD_MAX_PIXELS**0.5)
    shapes = [(side - i, side, 1) for i in range(4)]
    variants: list[weakref.ref] = []

    async def run() -> None:
        for shape in shapes:
            assert await model.fold_ready(shape)
            variants.append(weakref.ref(model._folded[shape]))
            assert np.isfinite(await model.infer(np.zeros(shape, np.uint8))).all()
            assert sum(h * w for h, w, _ in model.folded_shapes) <= FOLD_CACHE_PIXELS

    asyncio.run(run())
    freed(model)
    kept = FOLD_CACHE_PIXELS // (side * side)
    assert kept < len(shapes)
    assert model.folded_shapes == shapes[-kept:]
    assert [ref() is not None for ref in variants] == [False] * (len(shapes) - kept) + [True] * kept


def test_a_request_gets_the_variants_of_its_frame_shapes_before_it_joins_a_batch(
    fashion_manifest: Manifest,
):
    """folds_ready compiles the variant of each new shape among a request's images (in the
    model's channels, whatever the images' own), so the batch it joins waits for no compile;
    frames at the model's own size need none."""
    model = fashion_model(fashion_manifest)
    own = np.zeros(model.input_shape, np.uint8)
    images = [own, np.zeros((50, 60), np.uint8), np.zeros((50, 60, 3), np.uint8)]
    images.append(np.zeros((70, 40, 3), np.uint8))

    async def run() -> None:
        await model.folds_ready(images)
        await model.folds_ready(np.zeros((2, 90, 30, 1), np.uint8))
        assert sorted(model.folded_shapes) == [(50, 60, 1), (70, 40, 1), (90, 30, 1)]
        compiled = model.fold_compiles
        for frame in (np.zeros((50, 60, 1), np.uint8), np.zeros((90, 30, 1), np.uint8)):
            await model.infer(frame)
        assert model.fold_compiles == compiled == 3

    asyncio.run(run())


def test_evicted_variants_are_freed_on_the_compiling_thread(fashion_manifest: Manifest):
    """Freeing a variant (its infer requests, threads and buffers) took 3-80 ms: on the event
    loop, every request waited for it; the compiling thread frees them instead."""
    model = fashion_model(fashion_manifest)
    shapes = [(40 + i, 30, 1) for i in range(FOLD_VARIANTS + 3)]
    freed_on: list[str] = []

    async def run() -> None:
        for shape in shapes:
            assert await model.fold_ready(shape)
            variant = model._folded[shape]
            weakref.finalize(variant, lambda: freed_on.append(threading.current_thread().name))
            await model.infer(np.zeros(shape, np.uint8))

    asyncio.run(run())
    freed(model)
    assert len(freed_on) == 3
    assert all(name.startswith("fold-compile") for name in freed_on), freed_on
