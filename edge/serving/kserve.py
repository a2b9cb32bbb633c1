"""KServe v2 on the edge agent: Triton's `inference.GRPCInferenceService`, so an unmodified
`tritonclient.grpc` client calls an edge agent exactly as it calls Triton. The REST face
(cloud/common/kserve_rest.py) maps its routes onto this same servicer.

One model, named after the family (e.g. "fashion"), version = the manifest's. Inputs (send one):
  image   BYTES [N]           encoded JPEG/PNG, one element per image
  pixels  UINT8 [N, H, W, C]  raw pixels, C in {1, 3} (RGB); [H, W, C] or [H, W] for one image
Outputs: probabilities FP32 [N, K] (the answering tier's), top1 INT32 [N], edge_confidence
FP32 [N], tier BYTES [N] ("edge" or "cloud", per image); `probabilities` honours Triton's
classification extension (class_count=k gives BYTES [N, k] "score:index:label"). Response
parameters: tier (per image, comma-separated), edge_confidence (the lowest in the batch),
degraded, degraded_reason (comma-separated), edge_model, cloud_model. The model config states
the same shapes as the metadata (max_batch_size 0: the batch is the first dimension, up to the
config's `max_batch` parameter).
ModelStatistics gives Triton's per-version statistics (edge/serving/statistics.py),
RepositoryIndex the one model, LogSettings Triton's log settings over Python's logging.
"""

from __future__ import annotations

import json
import math
import struct
import time
from collections.abc import AsyncIterator
from importlib.metadata import version as package_version
from typing import Any

import grpc
import numpy as np
from numpy.typing import NDArray
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as kpb
from tritonclient.grpc import service_pb2_grpc as kpb_grpc
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from edgecascade.cloud.common import tracing
from edgecascade.cloud.common.errors import InternalFailure, InvalidInput, NotFound
from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.preprocessing import (
    Image,
    Images,
    InvalidImage,
    decode_image,
    raw_image,
    raw_images,
)
from edgecascade.cloud.triton.family import IMAGE, PIXELS, tensors  # one contract, both tiers
from edgecascade.edge.serving import logsettings, tracesettings
from edgecascade.edge.serving.agent import EdgeAgent
from edgecascade.edge.serving.rpc import RequestError, abort, deadline, metadata, ordered
from edgecascade.router.cascade.cascade import Answers

PLATFORM = "edgecascade"
# Triton's names for the protocol extensions served (perf_analyzer reads server-side times only
# from a server that lists "statistics"); binary_tensor_data on HTTP/REST (cloud/common/kserve_rest)
EXTENSIONS = (
    "classification",
    "parameters",
    "statistics",
    "trace",
    "logging",
    "binary_tensor_data",
)
OUTPUTS = ("probabilities", "top1", "edge_confidence", "tier")
DATATYPES = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.int32): "INT32",
    np.dtype(np.object_): "BYTES",
}
CONFIG_TYPES = {
    "BYTES": mc.TYPE_STRING,
    "UINT8": mc.TYPE_UINT8,
    "FP32": mc.TYPE_FP32,
    "INT32": mc.TYPE_INT32,
}


class KServeService(kpb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, agent: EdgeAgent) -> None:
        self.agent = agent
        self.model = agent.settings.family

    @property
    def version(self) -> str:
        """The family manifest version being served (it changes when a new pair is swapped in)."""
        return str(self.agent.manifest.version)

    def _check_model(self, name: str, version: str) -> None:
        if name != self.model:
            raise NotFound(f"unknown model {name!r}: this edge agent serves {self.model!r}")
        if version not in ("", self.version):
            raise NotFound(
                f"model {name!r} has no version {version!r}: this edge agent serves version "
                f"{self.version}"
            )

    async def ServerLive(
        self, request: kpb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> kpb.ServerLiveResponse:
        return kpb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: kpb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> kpb.ServerReadyResponse:
        return kpb.ServerReadyResponse(ready=True)  # the model is compiled before the server starts

    async def ModelReady(
        self, request: kpb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> kpb.ModelReadyResponse:
        try:
            self._check_model(request.name, request.version)
        except NotFound:
            return kpb.ModelReadyResponse(ready=False)
        return kpb.ModelReadyResponse(ready=True)

    async def ServerMetadata(
        self, request: kpb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> kpb.ServerMetadataResponse:
        return kpb.ServerMetadataResponse(
            name="edgecascade",
            version=package_version("edgecascade"),
            extensions=list(EXTENSIONS),
        )

    async def ModelMetadata(
        self, request: kpb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> kpb.ModelMetadataResponse:
        try:
            self._check_model(request.name, request.version)
        except NotFound as e:
            await abort(context, e.code, str(e))
        tensor = kpb.ModelMetadataResponse.TensorMetadata
        inputs, outputs = tensors(len(self.agent.manifest.labels))
        return kpb.ModelMetadataResponse(
            name=self.model,
            versions=[self.version],
            platform=PLATFORM,
            inputs=[tensor(name=n, datatype=t, shape=shape) for n, t, shape in inputs],
            outputs=[tensor(name=n, datatype=t, shape=shape) for n, t, shape in outputs],
        )

    async def ModelConfig(
        self, request: kpb.ModelConfigRequest, context: grpc.aio.ServicerContext
    ) -> kpb.ModelConfigResponse:
        try:
            self._check_model(request.name, request.version)
        except NotFound as e:
            await abort(context, e.code, str(e))
        inputs, outputs = tensors(len(self.agent.manifest.labels))
        return kpb.ModelConfigResponse(
            config=mc.ModelConfig(
                name=self.model,
                platform=PLATFORM,
                max_batch_size=0,  # the batch is the first of `dims`; max_batch caps it
                input=[
                    mc.ModelInput(name=n, data_type=CONFIG_TYPES[t], dims=shape, optional=True)
                    for n, t, shape in inputs
                ],
                output=[
                    mc.ModelOutput(name=n, data_type=CONFIG_TYPES[t], dims=shape)
                    for n, t, shape in outputs
                ],
                parameters={
                    k: mc.ModelParameter(string_value=v)
                    for k, v in {
                        **pair_parameters(self.agent.manifest),
                        "max_batch": str(self.agent.settings.max_batch),
                        "plugin_config": json.dumps(self.agent.model.properties()),
                        "nireq": str(self.agent.model.parallelism),
                    }.items()
                },
            )
        )

    async def ModelStatistics(
        self, request: kpb.ModelStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> kpb.ModelStatisticsResponse:
        """Triton's statistics of this model, per version (every version when none is named;
        every model when no name is given)."""
        statistics = self.agent.metrics.statistics
        if request.name not in ("", self.model):
            raise NotFound(f"unknown model {request.name!r}: this edge agent serves {self.model!r}")
        if request.version not in ("", *statistics.versions):
            raise NotFound(
                f"model {self.model!r} has no statistics of version {request.version!r}: it "
                f"has {sorted(statistics.versions, key=int)}"
            )
        return statistics.response(request.version)

    async def RepositoryIndex(
        self, request: kpb.RepositoryIndexRequest, context: grpc.aio.ServicerContext
    ) -> kpb.RepositoryIndexResponse:
        """The one model, at the version being served, READY."""
        index = kpb.RepositoryIndexResponse.ModelIndex
        return kpb.RepositoryIndexResponse(
            models=[index(name=self.model, version=self.version, state="READY")]
        )

    async def LogSettings(
        self, request: kpb.LogSettingsRequest, context: grpc.aio.ServicerContext
    ) -> kpb.LogSettingsResponse:
        """Triton's log settings, over Python's logging (edge/serving/logsettings.py)."""
        changes = {}
        for name, value in request.settings.items():
            kind = value.WhichOneof("parameter_choice")
            if kind is None:
                raise InvalidInput(f"log setting {name!r} has no value")
            changes[name] = getattr(value, kind)
        response = kpb.LogSettingsResponse()
        for name, setting in logsettings.update(changes).items():
            field = {bool: "bool_param", int: "uint32_param", str: "string_param"}[type(setting)]
            setattr(response.settings[name], field, setting)
        return response

    async def TraceSetting(
        self, request: kpb.TraceSettingRequest, context: grpc.aio.ServicerContext
    ) -> kpb.TraceSettingResponse:
        """Triton's trace settings, over the agent's tracing (edge/serving/tracesettings.py);
        the model's are the agent's own."""
        if request.model_name:
            self._check_model(request.model_name, "")
        changes = {name: list(value.value) for name, value in request.settings.items()}
        settings = tracesettings.update(changes) if changes else tracesettings.current()
        response = kpb.TraceSettingResponse()
        for name, values in settings.items():
            response.settings[name].value.extend(values)
        return response

    async def ModelInfer(
        self, request: kpb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> kpb.ModelInferResponse:
        with tracing.server_span("ModelInfer", metadata(context)):
            try:
                return await self._infer(request, deadline(context))
            except RequestError as e:
                await abort(context, e.code, str(e))

    async def ModelStreamInfer(
        self, requests: AsyncIterator[kpb.ModelInferRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[kpb.ModelStreamInferResponse]:
        """In order, up to stream_window at once; a failed request gets `error_message`. Each
        request has a span of its own in the stream's trace."""
        carrier = metadata(context)
        window = self.agent.settings.stream_window
        async for response in ordered(requests, lambda r: self._stream_item(r, carrier), window):
            yield response

    async def _stream_item(
        self, request: kpb.ModelInferRequest, carrier: dict[str, str]
    ) -> kpb.ModelStreamInferResponse:
        try:
            with tracing.server_span("ModelStreamInfer", carrier):
                response = await self._infer(request, None, frame=True)
            return kpb.ModelStreamInferResponse(infer_response=response)
        except RequestError as e:
            message = f"{e.code.name}: {e}"
        except Exception as e:  # a bug: this request's error, the stream goes on
            failure = InternalFailure.logged("ModelStreamInfer", e)
            message = f"{failure.code.name}: {failure}"
        return kpb.ModelStreamInferResponse(
            error_message=message,
            infer_response=kpb.ModelInferResponse(
                model_name=request.model_name, model_version=request.model_version, id=request.id
            ),
        )

    async def _infer(
        self, request: kpb.ModelInferRequest, deadline: float | None, *, frame: bool = False
    ) -> kpb.ModelInferResponse:
        """Raises NotFound (unknown model), InvalidImage or Overloaded. A stream `frame` waits
        for room among the requests in flight instead of being refused."""
        received_at = time.perf_counter()
        self._check_model(request.model_name, request.model_version)

        def decode() -> Images:
            requested_outputs(request)
            return images_of(request, self.agent.settings.max_batch)

        if frame:
            await self.agent.limit.room()
        return await self.agent.respond(
            decode,
            lambda answers: self._response(request, answers),
            payload_bytes=request.ByteSize(),
            received_at=received_at,
            deadline=deadline,
        )

    def _response(self, request: kpb.ModelInferRequest, answers: Answers) -> kpb.ModelInferResponse:
        probabilities = answers.probabilities.astype(np.float32)
        tensors: dict[str, NDArray[Any]] = {  # of each output's dtype
            "probabilities": probabilities,
            "top1": probabilities.argmax(axis=1).astype(np.int32),
            "edge_confidence": answers.edge_confidence.astype(np.float32),
            "tier": np.array([tier.encode() for tier in answers.tiers], dtype=object),
        }
        pair = answers.pair  # a request runs on one pair (EdgeAgent.answer)
        response = kpb.ModelInferResponse(
            model_name=self.model, model_version=str(pair.version), id=request.id
        )
        for name, class_count in requested_outputs(request).items():
            tensor = tensors[name]
            if class_count:
                tensor = classification(probabilities, class_count, pair.labels)
            response.outputs.add(name=name, datatype=DATATYPES[tensor.dtype], shape=tensor.shape)
            response.raw_output_contents.append(
                serialize_byte_tensor(tensor).item() if tensor.dtype == object else tensor.tobytes()
            )
        parameters = {
            "tier": ",".join(answers.tiers),
            "edge_confidence": float(tensors["edge_confidence"].min()),
            "degraded": bool(answers.degraded),
            "degraded_reason": str(answers.degraded_reason or ""),  # the text form, not the enum
            **pair_parameters(pair),
        }
        for key, value in parameters.items():
            field = {str: "string_param", float: "double_param", bool: "bool_param"}[type(value)]
            setattr(response.parameters[key], field, value)
        return response


def pair_parameters(pair: Manifest) -> dict[str, str]:
    return {"edge_model": pair.edge.key, "cloud_model": pair.cloud.key}


def classification(
    probabilities: NDArray[np.float32], k: int, labels: list[str]
) -> NDArray[np.object_]:
    """Triton's classification extension: BYTES [N, k] of "score:index:label", best first."""
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return np.array(
        [
            [f"{row[i]:f}:{i}:{labels[i]}".encode() for i in order]
            for row, order in zip(probabilities, top)
        ],
        dtype=object,
    )


def requested_outputs(request: kpb.ModelInferRequest) -> dict[str, int]:
    """Output name -> classification class count (0: the plain tensor); all when none asked."""
    if not request.outputs:
        return dict.fromkeys(OUTPUTS, 0)
    wanted: dict[str, int] = {}
    for output in request.outputs:
        if output.name not in OUTPUTS:
            raise InvalidImage(f"unknown output {output.name!r}: this model has {list(OUTPUTS)}")
        class_count = 0
        if "classification" in output.parameters:
            parameter = output.parameters["classification"]
            kind = parameter.WhichOneof("parameter_choice")
            class_count = getattr(parameter, kind) if kind else -1
            if kind not in ("int64_param", "uint64_param") or class_count < 0:
                raise InvalidImage(
                    f"output {output.name!r}: parameter 'classification' must be an integer "
                    f"number of classes >= 0, got {kind or 'no value'} {class_count!r}"
                )
        if class_count and output.name != "probabilities":
            raise InvalidImage(f"classification applies to 'probabilities', not {output.name!r}")
        wanted[output.name] = int(class_count)
    return wanted


def images_of(request: kpb.ModelInferRequest, max_batch: int) -> Images:
    """The decoded images of a ModelInferRequest (raw pixels: one [N, H, W, C] array);
    InvalidImage says what is wrong with it."""
    names = [tensor.name for tensor in request.inputs]
    if len(names) != 1 or names[0] not in (IMAGE, PIXELS):
        raise InvalidImage(
            f"got inputs {names}: send exactly one of {IMAGE!r} (BYTES [N], encoded JPEG/PNG) "
            f"or {PIXELS!r} (UINT8 [N, H, W, C])"
        )
    if len(request.raw_input_contents) > len(request.inputs):
        raise InvalidImage(
            f"{len(request.raw_input_contents)} raw_input_contents for {len(request.inputs)} "
            "input: send one per input, or none (contents in the tensor)"
        )
    tensor = request.inputs[0]
    raw = request.raw_input_contents[0] if request.raw_input_contents else None
    shape = [int(d) for d in tensor.shape]
    expected = {IMAGE: "BYTES", PIXELS: "UINT8"}[tensor.name]
    if tensor.datatype != expected:
        raise InvalidImage(f"input {tensor.name!r} must be {expected}, got {tensor.datatype}")
    if any(d < 0 for d in shape):
        raise InvalidImage(f"input {tensor.name!r} has a negative dimension in {shape}")
    images = _encoded(tensor, raw, shape) if tensor.name == IMAGE else _pixels(tensor, raw, shape)
    if not 1 <= len(images) <= max_batch:
        raise InvalidImage(f"batch of {len(images)} images: send 1 to {max_batch} (max_batch)")
    return images


def _encoded(
    tensor: kpb.ModelInferRequest.InferInputTensor, raw: bytes | None, shape: list[int]
) -> list[Image]:
    if raw is not None:
        try:
            elements = list(deserialize_bytes_tensor(raw))
        except struct.error as e:  # truncated or malformed length prefixes
            raise InvalidImage(f"input {IMAGE!r} is not a well-formed BYTES tensor: {e}") from None
    else:
        elements = list(tensor.contents.bytes_contents)
    if len(elements) != math.prod(shape):
        raise InvalidImage(
            f"input {IMAGE!r} of shape {shape} needs {math.prod(shape)} elements, "
            f"got {len(elements)}"
        )
    return [decode_image(bytes(element)) for element in elements]


def _pixels(
    tensor: kpb.ModelInferRequest.InferInputTensor, raw: bytes | None, shape: list[int]
) -> NDArray[np.uint8] | list[Image]:
    """[N, H, W, C] as one array (a view of the request's bytes), or one [H, W(, C)] image."""
    if raw is None:
        values = np.asarray(tensor.contents.uint_contents, np.uint32)
        if values.size and values.max() > 255:
            raise InvalidImage(f"input {PIXELS!r} holds values above 255")
        raw = values.astype(np.uint8).tobytes()
    if len(shape) == 4:
        if len(raw) != math.prod(shape):  # Python ints: [2**32, 2**32] is not 0 bytes
            raise InvalidImage(
                f"input {PIXELS!r} of shape {shape} needs {math.prod(shape)} bytes, got {len(raw)}"
            )
        return raw_images(shape, raw)
    if len(shape) in (2, 3):
        return [raw_image(shape, raw)]
    raise InvalidImage(f"input {PIXELS!r} has shape {shape}: expected [N, H, W, C] or [H, W, C]")
