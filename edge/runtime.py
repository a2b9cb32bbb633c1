"""The edge model on OpenVINO: compiled once, fed through an AsyncInferQueue from asyncio."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Literal

import numpy as np
import openvino as ov

Device = str  # "CPU", "GPU", "AUTO", "AUTO:GPU,CPU", ...
PerformanceHint = Literal["LATENCY", "THROUGHPUT"]


class EdgeModel:
    """An OpenVINO compiled model whose requests overlap: `await infer(image)` never blocks
    the event loop; up to `parallelism` requests run at once on the device."""

    def __init__(self, model_xml: Path, device: Device = "CPU", hint: PerformanceHint = "LATENCY"):
        core = ov.Core()
        self.compiled = core.compile_model(
            core.read_model(model_xml), device, {"PERFORMANCE_HINT": hint}
        )
        self.requested_device = device
        self.execution_devices: list[str] = list(self.compiled.get_property("EXECUTION_DEVICES"))
        self._queue = ov.AsyncInferQueue(self.compiled)
        self._queue.set_callback(self._done)
        self._slots: asyncio.Semaphore | None = None

    @property
    def parallelism(self) -> int:
        return len(self._queue)

    @property
    def streams(self) -> int:
        return int(self.compiled.get_property("NUM_STREAMS"))

    def describe(self) -> str:
        return (
            f"{self.requested_device} -> {','.join(self.execution_devices)} "
            f"({self.streams} streams, {self.parallelism} infer requests)"
        )

    async def infer(self, image: np.ndarray) -> np.ndarray:
        """Logits [classes] for one uint8 [H, W, C] image."""
        if self._slots is None:  # bound to the loop that first uses the model
            self._slots = asyncio.Semaphore(self.parallelism)
        async with self._slots:
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            self._queue.start_async({0: image[None]}, (loop, future))
            return await future

    @staticmethod
    def _done(request: ov.InferRequest, userdata: tuple[asyncio.AbstractEventLoop, asyncio.Future]):
        loop, future = userdata
        logits = request.get_output_tensor(0).data[0].copy()
        loop.call_soon_threadsafe(_resolve, future, logits)


def _resolve(future: asyncio.Future, value: np.ndarray) -> None:
    if not future.cancelled():
        future.set_result(value)
