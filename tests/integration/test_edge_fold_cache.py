"""The cache of crop-and-resize variants of the real fashion edge model (issue 12): frames of
many distinct shapes keep it bounded, evicted variants (compiled model, infer requests, their
threads) are freed, what each variant holds is bounded whatever batches it ran, and background
compiles do not pile up."""

import asyncio
import gc
import multiprocessing
import os
import threading
import weakref

import numpy as np
import psutil
import pytest

from edgecascade.cloud.common.manifest import Manifest, Preprocessing
from edgecascade.cloud.common.paths import edge_model_file, family_dir
from edgecascade.edge.serving.memory import return_freed_memory
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


# What one variant may hold: a fixed part (compiled model, kernels), and per pixel of its frame
# shape whatever batches of that shape it ran. Measured here: 1.0-1.2 MB, 1.0-1.15 bytes; with
# the dynamic batch of before, 4 bytes per pixel of the largest batch seen (65 bytes after these
# batches of 16).
VARIANT_FIXED_MB = 3.0
VARIANT_BYTES_PER_PIXEL = 2.0
MB = 2**20


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


def variant_memory(spec: Preprocessing) -> tuple[float, float]:
    """In a process of its own, as the agent's allocator is set: the RSS (MB) each of
    FOLD_VARIANTS small variants added, and the bytes per pixel of their shapes that the large
    variants replacing some of them added after batches of 16 frames each."""
    return_freed_memory()
    model = EdgeModel(edge_model_file(family_dir("fashion"), "int8"), fold=spec)
    rss = psutil.Process().memory_info

    async def run() -> tuple[float, float]:
        await model.infer(np.zeros((27, 29, 1), np.uint8))  # OpenVINO's one-off costs
        freed(model)
        before = rss().rss
        for i in range(FOLD_VARIANTS):
            await model.infer(np.zeros((30 + i, 30, 1), np.uint8))
        freed(model)
        small = rss().rss
        rng = np.random.default_rng(0)
        for i in range(4):  # ~1 MP each: FOLD_CACHE_PIXELS keeps all four
            frames = rng.integers(0, 256, (16, 1000 - i, 1000, 1), np.uint8)
            assert np.isfinite(await model.infer_batch(frames)).all()
            del frames
        freed(model)
        large = [shape for shape in model.folded_shapes if shape[0] > 900]
        assert len(large) == 4 and len(model.folded_shapes) == FOLD_VARIANTS
        pixels = sum(h * w for h, w, _ in large)
        return (small - before) / FOLD_VARIANTS / MB, (rss().rss - small) / pixels

    return asyncio.run(run())


def test_a_variant_holds_a_bounded_memory_whatever_batches_it_ran(fashion_manifest: Manifest):
    """Each variant takes one frame at a time, its memory planned when compiled: a fixed part
    and about its frame's bytes. With a dynamic batch, a variant kept buffers of ~4 bytes per
    pixel for the largest batch it had run, so the fuzzing left the agent +25-31 MB."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        fixed_mb, per_pixel = pool.apply(variant_memory, (fashion_manifest.edge.preprocessing,))
    assert fixed_mb <= VARIANT_FIXED_MB, f"{fixed_mb:.1f} MB per small variant"
    assert per_pixel <= VARIANT_BYTES_PER_PIXEL, f"{per_pixel:.1f} bytes per pixel of its shape"


def test_variants_of_large_frames_are_bounded_by_their_pixels(fashion_manifest: Manifest):
    """Fewer than FOLD_VARIANTS large shapes already fill FOLD_CACHE_PIXELS, and the least
    recently used go, freed."""
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
