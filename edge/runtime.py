"""The edge model on OpenVINO: compiled once, fed through an AsyncInferQueue from asyncio."""

from __future__ import annotations

import asyncio
from collections import deque
from pathlib import Path
from typing import Literal

import numpy as np
import openvino as ov

Device = str  # "CPU", "GPU", "AUTO", "AUTO:GPU,CPU", ...
PerformanceHint = Literal["LATENCY", "THROUGHPUT"]


class EdgeModel:
    """An OpenVINO compiled model whose requests overlap: `await infer_batch(images)` never
    blocks the event loop; up to `parallelism` requests run at once on the device, and images
    that arrive while all are busy are batched into the next free one (dynamic batch models)."""

    def __init__(
        self,
        model_xml: Path,
        device: Device = "CPU",
        hint: PerformanceHint = "LATENCY",
        max_batch: int = 16,
    ):
        core = ov.Core()
        model = core.read_model(model_xml)
        self.compiled = core.compile_model(model, device, {"PERFORMANCE_HINT": hint})
        self.requested_device = device
        self.execution_devices: list[str] = list(self.compiled.get_property("EXECUTION_DEVICES"))
        self.max_batch = max_batch if model.input(0).get_partial_shape()[0].is_dynamic else 1
        self._queue = ov.AsyncInferQueue(self.compiled)
        self._queue.set_callback(self._done)
        self._idle = len(self._queue)
        self._waiting: deque[tuple[np.ndarray, asyncio.Future]] = deque()

    @property
    def parallelism(self) -> int:
        return len(self._queue)

    @property
    def streams(self) -> int:
        return int(self.compiled.get_property("NUM_STREAMS"))

    def describe(self) -> str:
        return (
            f"{self.requested_device} -> {','.join(self.execution_devices)} "
            f"({self.streams} streams, {self.parallelism} infer requests, "
            f"batches of up to {self.max_batch})"
        )

    async def infer(self, image: np.ndarray) -> np.ndarray:
        """Logits [classes] for one uint8 [H, W, C] image."""
        return (await self.infer_batch(image[None]))[0]

    async def infer_batch(self, images: np.ndarray) -> np.ndarray:
        """Logits [N, classes] for uint8 [N, H, W, C] images, in parts of at most `max_batch`.
        While every infer request is busy, parts wait and then go to the device together, up
        to `max_batch` images in one request."""
        loop = asyncio.get_running_loop()
        futures = []
        for start in range(0, len(images), self.max_batch):
            future = loop.create_future()
            self._waiting.append((images[start : start + self.max_batch], future))
            futures.append(future)
        self._start(loop)
        parts = [await future for future in futures]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        while self._waiting and self._idle:
            parts = [self._waiting.popleft()]
            size, shape = len(parts[0][0]), parts[0][0].shape[1:]
            while (
                self._waiting
                and size + len(self._waiting[0][0]) <= self.max_batch
                and self._waiting[0][0].shape[1:] == shape
            ):
                parts.append(self._waiting.popleft())
                size += len(parts[-1][0])
            self._idle -= 1
            images = parts[0][0] if len(parts) == 1 else np.concatenate([p for p, _ in parts])
            sizes = [len(p) for p, _ in parts]
            self._queue.start_async({0: images}, (loop, sizes, [future for _, future in parts]))

    def _done(
        self, request: ov.InferRequest, userdata: tuple[asyncio.AbstractEventLoop, list, list]
    ):
        loop, sizes, futures = userdata
        logits = request.get_output_tensor(0).data.copy()
        loop.call_soon_threadsafe(self._finish, loop, sizes, futures, logits)

    def _finish(
        self,
        loop: asyncio.AbstractEventLoop,
        sizes: list[int],
        futures: list[asyncio.Future],
        logits: np.ndarray,
    ) -> None:
        self._idle += 1
        for future, part in zip(futures, np.split(logits, np.cumsum(sizes)[:-1])):
            if not future.cancelled():
                future.set_result(part)
        self._start(loop)
