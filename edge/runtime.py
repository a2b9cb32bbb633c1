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
    """An OpenVINO compiled model whose requests overlap: `await infer(image)` never blocks
    the event loop; up to `parallelism` requests run at once on the device, and images that
    arrive while all are busy are batched into the next free one (dynamic batch models)."""

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
        """Logits [classes] for one uint8 [H, W, C] image. While every infer request is busy,
        images wait and then go to the device together, up to `max_batch` in one request."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting.append((image, future))
        self._start(loop)
        return await future

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        while self._waiting and self._idle:
            batch = [self._waiting.popleft()]
            shape = batch[0][0].shape
            while (
                self._waiting and len(batch) < self.max_batch and self._waiting[0][0].shape == shape
            ):
                batch.append(self._waiting.popleft())
            self._idle -= 1
            images = np.stack([image for image, _ in batch])
            self._queue.start_async({0: images}, (loop, [future for _, future in batch]))

    def _done(self, request: ov.InferRequest, userdata: tuple[asyncio.AbstractEventLoop, list]):
        loop, futures = userdata
        logits = request.get_output_tensor(0).data.copy()
        loop.call_soon_threadsafe(self._finish, loop, futures, logits)

    def _finish(
        self, loop: asyncio.AbstractEventLoop, futures: list[asyncio.Future], logits: np.ndarray
    ) -> None:
        self._idle += 1
        for future, row in zip(futures, logits):
            if not future.cancelled():
                future.set_result(row)
        self._start(loop)
