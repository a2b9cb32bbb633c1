"""The cache of crop-and-resize variants of the real fashion edge model (issue 12): frames of
many distinct shapes keep it bounded, evicted variants (compiled model, infer requests, their
threads) are freed, and background compiles do not pile up."""

import asyncio
import gc
import os
import weakref

import numpy as np
import pytest

from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.paths import edge_model_file, family_dir
from edgecascade.edge.serving.runtime import FOLD_COMPILES_QUEUED, FOLD_VARIANTS, EdgeModel

pytestmark = pytest.mark.integration
SHAPES = [(28 + i, 30 + 2 * i, 1) for i in range(30)]


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


def test_thirty_frame_shapes_keep_the_variant_cache_bounded(fashion_manifest: Manifest):
    model = EdgeModel(
        edge_model_file(family_dir("fashion"), "int8"), fold=fashion_manifest.edge.preprocessing
    )
    variants: list[weakref.ref] = []

    async def run() -> int:
        peak = 0
        for i, shape in enumerate(SHAPES):
            assert await model.fold_ready(shape)
            variants.append(weakref.ref(model._folded[shape]))
            logits = await model.infer(np.full(shape, i, np.uint8))  # through the variant
            assert np.isfinite(logits).all()
            gc.collect()
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
    gc.collect()
    alive = [ref() is not None for ref in variants]
    assert sum(alive) <= FOLD_VARIANTS and not any(alive[: -FOLD_VARIANTS - 2])
    assert model.fold_compiles == len(SHAPES) + 12
    assert peak <= 8, f"threads grew by {peak} while variants were evicted"
