"""The edge model on OpenVINO: compiled once, fed through an AsyncInferQueue from asyncio.
Frames of another size than the model's can be cropped and resized inside OpenVINO
(PrePostProcessor) by a variant compiled for their shape."""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import openvino as ov
from numpy.typing import NDArray
from openvino.preprocess import PrePostProcessor, ResizeAlgorithm

from edgecascade.cloud.common.background import background_pool
from edgecascade.cloud.common.errors import UserError
from edgecascade.cloud.common.manifest import Preprocessing
from edgecascade.cloud.common.preprocessing import (
    Images,
    kept_region,
    off_loop,
    prepare_batch,
)
from edgecascade.edge.serving.settings import PerformanceHint

log = logging.getLogger(__name__)
Device = str  # "CPU", "GPU", "AUTO", "AUTO:GPU,CPU", ...
Shape = tuple[int, ...]
Frames: TypeAlias = NDArray[np.uint8]  # uint8 [N, H, W, C]
Logits: TypeAlias = NDArray[np.float32]  # [N, classes] ([N, members, classes]: an ensemble)
Parts: TypeAlias = list[asyncio.Future[Logits]]  # the callers awaiting one request's images
# an infer request's userdata: the loop, each part's number of images, and their callers
Userdata: TypeAlias = tuple[asyncio.AbstractEventLoop, list[int], Parts]
FOLD_VARIANTS = 8  # compiled crop-and-resize variants kept, one per frame shape (LRU)
# Larger frames always take the cv2 path, and a camera's frames are up to 1080p; answers stay
# the same for a shape, frame after frame.
FOLD_MAX_PIXELS = 1920 * 1080
FOLD_COMPILES_QUEUED = 2  # variants compiling or waiting to (one at a time); more wait their turn
# Pixels of frame shapes with a variant kept, all together; least recently used ones go first.
# A variant takes one frame at a time (a static shape, its memory planned when compiled): 1-3 MB
# whatever its shape, plus about its frame's bytes in each infer request. With a dynamic batch
# (before), each request kept ~4 bytes per pixel of the largest batch it had run: a 1 MP
# variant held +4 MB after one frame and +31 MB after a batch of 8 (test_edge_fold_cache).
FOLD_CACHE_PIXELS = 2 * FOLD_MAX_PIXELS


# devices that pick among, or combine, the devices listed after their colon
VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")


def check_device(device: Device, available: Sequence[str]) -> None:
    """A UserError when `device` names a device OpenVINO has no plugin or driver for here:
    `available` is Core.available_devices (["CPU", "GPU.0", ...]), where "GPU" is any GPU.n."""
    kind, _, listed = device.partition(":")
    names = listed.split(",") if kind in VIRTUAL_DEVICES else [device]
    for name in (n.lstrip("-").partition("(")[0] for n in names if n):
        if name not in available and all(a.partition(".")[0] != name for a in available):
            raise UserError(
                f"OpenVINO device {device!r}: no {name} (or no driver for it) on this machine; "
                f"available: {', '.join(available)}"
            )


# the properties GetStatus, the log and the KServe model config show, besides those set
SHOWN_PROPERTIES = ("PERFORMANCE_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS")


def check_plugin_config(core: ov.Core, device: Device, config: Mapping[str, Any]) -> None:
    """A UserError naming the first key of `config` (OVMS's plugin_config) that `device`
    cannot set; its values are checked by compile_model (`compile`)."""
    kind = device.partition(":")[0]
    if kind in VIRTUAL_DEVICES or not config:
        return  # AUTO and the like take their devices' properties: compile_model judges
    supported = core.get_property(kind, "SUPPORTED_PROPERTIES")
    settable = sorted(name for name, mode in supported.items() if str(mode) == "RW")
    for key in config:
        if key not in settable:
            raise UserError(
                f"plugin_config: {device} has no property {key!r} to set; settable: "
                f"{', '.join(settable)}"
            )


def compile_checked(
    core: ov.Core, model: ov.Model, device: Device, config: Mapping[str, Any], user: str
) -> ov.CompiledModel:
    """compile_model, where OpenVINO refusing a property the user set (`user`, the JSON they
    gave; empty when none) is one UserError line: OpenVINO's own last line."""
    try:
        return core.compile_model(model, device, dict(config))
    except RuntimeError as e:
        lines = [line for line in str(e).splitlines() if line.strip()]
        if not user or not lines:
            raise
        raise UserError(f"plugin_config {user} on {device}: {lines[-1].strip()}") from None


class _Requests:
    """One compiled model's infer requests (`nireq`; 0: OpenVINO's optimal number): up to
    `parallelism` run at once, and parts that arrive while all are busy go to the device
    together, up to `max_batch` images."""

    def __init__(self, compiled: ov.CompiledModel, max_batch: int, nireq: int = 0) -> None:
        self.max_batch = max_batch
        self._queue = ov.AsyncInferQueue(compiled, nireq)
        # through a weak reference: a bound method would make a cycle through the queue that
        # Python's collector cannot see into, and keep every evicted variant alive
        self._queue.set_callback(partial(_request_done, weakref.ref(self)))
        self._idle = len(self._queue)
        self._waiting: deque[tuple[Frames, asyncio.Future[Logits]]] = deque()

    @property
    def parallelism(self) -> int:
        return len(self._queue)

    async def infer_batch(self, images: Frames) -> Logits:
        loop = asyncio.get_running_loop()
        futures: Parts = []
        for start in range(0, len(images), self.max_batch):
            future: asyncio.Future[Logits] = loop.create_future()
            self._waiting.append((images[start : start + self.max_batch], future))
            futures.append(future)
        self._start(loop)
        parts = [await future for future in futures]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        while self._waiting and self._idle:
            parts = [self._waiting.popleft()]
            size = len(parts[0][0])
            while self._waiting and size + len(self._waiting[0][0]) <= self.max_batch:
                parts.append(self._waiting.popleft())
                size += len(parts[-1][0])
            self._idle -= 1
            images = parts[0][0] if len(parts) == 1 else np.concatenate([p for p, _ in parts])
            sizes = [len(p) for p, _ in parts]
            self._queue.start_async({0: images}, (loop, sizes, [future for _, future in parts]))

    def _done(self, request: ov.InferRequest, userdata: Userdata) -> None:
        loop, sizes, futures = userdata
        logits: Logits = request.get_output_tensor(0).data.copy()
        loop.call_soon_threadsafe(self._finish, loop, sizes, futures, logits)

    def _finish(
        self,
        loop: asyncio.AbstractEventLoop,
        sizes: list[int],
        futures: Parts,
        logits: Logits,
    ) -> None:
        self._idle += 1
        for future, part in zip(futures, np.split(logits, np.cumsum(sizes)[:-1])):
            if not future.cancelled():
                future.set_result(part)
        self._start(loop)


def _request_done(
    requests: weakref.ref[_Requests], request: ov.InferRequest, userdata: Userdata
) -> None:
    """An infer request's callback: the awaiting caller holds the _Requests while it runs."""
    if (alive := requests()) is not None:
        alive._done(request, userdata)


def foldable(shape: Shape) -> bool:
    """Whether frames of `shape` [H, W, C] get a folded variant (at most FOLD_MAX_PIXELS)."""
    return shape[0] * shape[1] <= FOLD_MAX_PIXELS


class EdgeModel:
    """An OpenVINO compiled model whose requests overlap: `await infer_batch(images)` never
    blocks the event loop; up to `parallelism` requests run at once on the device, and images
    that arrive while all are busy are batched into the next free one (dynamic batch models).

    With `fold` (the model's Preprocessing), images of any size are welcome: each shape gets a
    variant that crops and resizes frames of that shape inside the model, compiled in a thread
    (tens of ms) while the first frames of that shape wait for it. Every frame of a shape takes
    the same path, so an answer never depends on which frames came first; a shape that cannot
    fold is always prepared with cv2."""

    def __init__(
        self,
        model_xml: Path,
        device: Device = "CPU",
        hint: PerformanceHint = "LATENCY",
        max_batch: int = 16,
        fold: Preprocessing | None = None,
        plugin_config: Mapping[str, Any] | None = None,
        nireq: int = 0,
    ) -> None:
        self._core = ov.Core()
        self._model_xml = model_xml
        self.plugin_config = dict(plugin_config or {})
        self.nireq = nireq
        self._config = {"PERFORMANCE_HINT": hint, **self.plugin_config}
        self._user_config = json.dumps(self.plugin_config) if self.plugin_config else ""
        model = self._core.read_model(model_xml)
        check_device(device, self._core.available_devices)
        check_plugin_config(self._core, device, self.plugin_config)
        self.compiled = compile_checked(self._core, model, device, self._config, self._user_config)
        self.requested_device = device
        self.execution_devices: list[str] = list(self.compiled.get_property("EXECUTION_DEVICES"))
        partial_shape = model.input(0).get_partial_shape()
        self.input_shape: Shape = tuple(d.get_length() for d in list(partial_shape)[1:])
        self.max_batch = max_batch if partial_shape[0].is_dynamic else 1
        self._requests = _Requests(self.compiled, self.max_batch, nireq)
        self.fold = fold
        self.fold_compiles = 0
        self._folded: OrderedDict[Shape, _Requests | None] = OrderedDict()  # None: cannot fold
        self._compiling: dict[Shape, asyncio.Future[_Requests]] = {}
        # one compile at a time, below the requests' priority (57-151 ms of CPU each)
        self._compiler = background_pool(1, "fold-compile")

    @property
    def parallelism(self) -> int:
        return self._requests.parallelism

    def properties(self) -> dict[str, str]:
        """The OpenVINO properties in effect (read back from the compiled model): hint,
        streams, threads and every key of plugin_config."""
        shown: dict[str, str] = {}
        for key in (*SHOWN_PROPERTIES, *self.plugin_config):
            try:
                shown[key] = str(self.compiled.get_property(key))
            except RuntimeError:  # not readable on this device: as it was set
                shown[key] = str(self._config.get(key, "?"))
        return shown

    @property
    def folded_shapes(self) -> list[Shape]:
        """Frame shapes with a compiled crop-and-resize variant, least recently used first."""
        return [shape for shape, requests in self._folded.items() if requests]

    def describe(self) -> str:
        folding = f", folds {self.fold.color} crop/resize" if self.fold else ""
        shown = self.properties()
        return (
            f"{self.requested_device} -> {','.join(self.execution_devices)} "
            f"({shown['PERFORMANCE_HINT']} hint, {shown['NUM_STREAMS']} streams, "
            f"{shown['INFERENCE_NUM_THREADS']} threads, {self.parallelism} infer requests, "
            f"batches of up to {self.max_batch}{folding})"
        )

    async def infer(self, image: NDArray[np.uint8]) -> Logits:
        """Logits [classes] ([members, classes] for an ensemble) for one uint8 [H, W, C] image."""
        logits: Logits = (await self.infer_batch(image[None]))[0]
        return logits

    async def infer_batch(self, images: Frames) -> Logits:
        """Logits [N, classes] ([N, members, classes]) for uint8 [N, H, W, C] images, in parts
        of at most `max_batch`. While every infer request is busy, parts wait and then go to the
        device together, up to `max_batch` images in one request. Images not at the model's size
        need `fold`, and the model's channels (colour conversion is the caller's)."""
        shape = images.shape[1:]
        if shape == self.input_shape:
            return await self._requests.infer_batch(images)
        if self.fold is None or shape[-1:] != self.input_shape[-1:]:
            raise ValueError(
                f"images of shape {list(shape)}: the edge model takes {list(self.input_shape)}"
                + ("" if self.fold else " (frames of other sizes need folding on)")
            )
        requests = self._folded_requests(shape, self.fold) if foldable(shape) else None
        if requests is None and await self.fold_ready(shape):
            requests = self._folded.get(shape)
        if requests is None:  # this shape cannot fold: always cv2, the same answers every time
            prepared = await off_loop(images, prepare_batch, images, self.fold)
            return await self._requests.infer_batch(prepared)
        return await requests.infer_batch(images)

    async def folds_ready(self, images: Images) -> None:
        """Compile (or await) the variants of the images' shapes, to be called before they join
        a batch: their own request waits for a new shape's compilation, the others in that batch
        do not."""
        if self.fold is None:
            return
        sizes = (
            {images.shape[1:3]} if isinstance(images, np.ndarray) else {i.shape[:2] for i in images}
        )
        shapes = {(*size, *self.input_shape[-1:]) for size in sizes} - {self.input_shape}
        await asyncio.gather(*(self.fold_ready(shape) for shape in shapes))

    async def fold_ready(self, shape: Shape) -> bool:
        """Compile (or await) the variant for frames of `shape` [H, W, C]; whether there is one."""
        if self.fold is None or not foldable(shape):
            return False
        while shape not in self._folded:
            self._folded_requests(shape, self.fold)
            # its own compilation, or (while too many are queued) any other one
            pending = self._compiling.get(shape) or next(iter(self._compiling.values()), None)
            if pending is None:
                break
            await asyncio.wait([pending])
        return self._folded.get(shape) is not None

    def _folded_requests(self, shape: Shape, spec: Preprocessing) -> _Requests | None:
        """The variant for `shape` if compiled; else None, and its compilation starts unless
        FOLD_COMPILES_QUEUED others are under way (a later frame of that shape asks again)."""
        if shape in self._folded:
            self._folded.move_to_end(shape)
            return self._folded[shape]
        if shape not in self._compiling and len(self._compiling) < FOLD_COMPILES_QUEUED:
            loop = asyncio.get_running_loop()
            task = loop.run_in_executor(self._compiler, self._compile_folded, shape, spec)
            self._compiling[shape] = task
            task.add_done_callback(partial(self._compiled, shape))
        return None

    def _compiled(self, shape: Shape, task: asyncio.Future[_Requests]) -> None:
        del self._compiling[shape]
        if task.cancelled():
            return
        if task.exception():
            log.warning("cannot fold preprocessing for frames of %s: %s", shape, task.exception())
        self._folded[shape] = None if task.exception() else task.result()
        kept = sum(s[0] * s[1] for s, requests in self._folded.items() if requests)
        evicted: list[_Requests] = []
        while len(self._folded) > FOLD_VARIANTS or kept > FOLD_CACHE_PIXELS:
            shape, requests = self._folded.popitem(last=False)
            if requests:
                kept -= shape[0] * shape[1]
                evicted.append(requests)
        if evicted:  # freeing a variant (threads, buffers) takes 3-80 ms: not on the event loop
            self._compiler.submit(evicted.clear)

    def _compile_folded(self, shape: Shape, spec: Preprocessing) -> _Requests:
        """The model behind a PrePostProcessor that takes one uint8 [1, H, W, C] frame, keeps the
        region `prepare` keeps and resizes it (linear) to the model's size. One frame, not a
        dynamic batch: its memory is planned once (a dynamic batch kept buffers for the largest
        batch seen) and it ran faster (fashion, 1 MP frames: 0.11 vs 0.34 ms for one, 1.0 vs
        2.1 ms for 8 one by one vs batched)."""
        h, w, c = shape
        top, left, bottom, right = kept_region(h, w, spec)
        ppp = PrePostProcessor(self._core.read_model(self._model_xml))
        ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_shape(
            [1, h, w, c]
        )
        ppp.input().preprocess().crop([0, top, left, 0], [2**31 - 1, bottom, right, c]).resize(
            ResizeAlgorithm.RESIZE_LINEAR
        )
        ppp.input().model().set_layout(ov.Layout("NHWC"))
        compiled = compile_checked(
            self._core, ppp.build(), self.requested_device, self._config, self._user_config
        )
        self.fold_compiles += 1
        return _Requests(compiled, 1, self.nireq)
