"""KServe v2 over HTTP/REST: Triton's HTTP routes, JSON tensors and the binary tensor extension
(Inference-Header-Content-Length), over any servicer of KServe v2 gRPC methods, so that an
unmodified `tritonclient.http` calls the edge agent, or the router gateway, as it calls Triton's
port 8000.

Each route reads its request into the KServe protobuf message, calls the same method of the
servicer (the agent's own, edge/serving/kserve.py; the gateway's, which forwards it over gRPC)
and writes the protobuf answer as Triton's JSON: one mapping under every face. A caller file
applies here too (a bearer token or a mutual-TLS client certificate; the method's scope as on
gRPC). `cloud.common.asgi` serves the app.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, NoReturn, Protocol

import grpc
import numpy as np
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from tritonclient.grpc import service_pb2 as kpb
from tritonclient.utils import deserialize_bytes_tensor, triton_to_np_dtype

from edgecascade.cloud.common.asgi import COMMON_NAME
from edgecascade.cloud.common.auth import Authorizer, Denied
from edgecascade.cloud.common.errors import InternalFailure, InvalidInput, RequestError

log = logging.getLogger(__name__)

HEADER_LENGTH = "Inference-Header-Content-Length"
SERVICE = "/inference.GRPCInferenceService/"
# gRPC status -> HTTP status (google.rpc.Code's HTTP mapping)
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
# KServe datatype -> the InferTensorContents field its JSON `data` goes into
CONTENTS = {
    "BOOL": "bool_contents",
    **dict.fromkeys(("INT8", "INT16", "INT32"), "int_contents"),
    "INT64": "int64_contents",
    **dict.fromkeys(("UINT8", "UINT16", "UINT32"), "uint_contents"),
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_INTEGERS = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


class BodyTooLarge(RequestError):
    """A request body (or its decompressed form) past the agent's max_message_bytes."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, decompressed when its Content-Encoding is gzip or deflate (as Triton
    takes it); BodyTooLarge past `limit` bytes either way, InvalidInput when it does not
    decompress."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the request body is over {limit} bytes (max_message_bytes)")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise InvalidInput(f"Content-Encoding {encoding!r}: send gzip, deflate or none")
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        body = inflater.decompress(body, limit + 1)
    except zlib.error as e:
        raise InvalidInput(f"the request body is not {encoding} data: {e}") from None
    if len(body) > limit or inflater.unconsumed_tail:
        raise BodyTooLarge(f"the {encoding} request body inflates past {limit} bytes")
    return body


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(details)
        self.code = code


class RestContext:
    """What the servicer reads of a grpc.aio.ServicerContext: no deadline (HTTP has none), the
    request's headers as its metadata (where a trace context comes in); `abort` raises
    Aborted."""

    def __init__(self, headers: Mapping[str, str] | None = None) -> None:
        self.headers = headers or {}

    def time_remaining(self) -> float | None:
        return None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return tuple((key.lower(), value) for key, value in self.headers.items())

    async def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise Aborted(code, details)


class KServeServicer(Protocol):
    """The KServe v2 gRPC methods the routes call; `context` is a RestContext."""

    async def ServerLive(
        self, request: kpb.ServerLiveRequest, context: Any
    ) -> kpb.ServerLiveResponse: ...
    async def ServerReady(
        self, request: kpb.ServerReadyRequest, context: Any
    ) -> kpb.ServerReadyResponse: ...
    async def ModelReady(
        self, request: kpb.ModelReadyRequest, context: Any
    ) -> kpb.ModelReadyResponse: ...
    async def ServerMetadata(
        self, request: kpb.ServerMetadataRequest, context: Any
    ) -> kpb.ServerMetadataResponse: ...
    async def ModelMetadata(
        self, request: kpb.ModelMetadataRequest, context: Any
    ) -> kpb.ModelMetadataResponse: ...
    async def ModelConfig(
        self, request: kpb.ModelConfigRequest, context: Any
    ) -> kpb.ModelConfigResponse: ...
    async def ModelStatistics(
        self, request: kpb.ModelStatisticsRequest, context: Any
    ) -> kpb.ModelStatisticsResponse: ...
    async def RepositoryIndex(
        self, request: kpb.RepositoryIndexRequest, context: Any
    ) -> kpb.RepositoryIndexResponse: ...
    async def LogSettings(
        self, request: kpb.LogSettingsRequest, context: Any
    ) -> kpb.LogSettingsResponse: ...
    async def TraceSetting(
        self, request: kpb.TraceSettingRequest, context: Any
    ) -> kpb.TraceSettingResponse: ...
    async def ModelInfer(
        self, request: kpb.ModelInferRequest, context: Any
    ) -> kpb.ModelInferResponse: ...


def as_json(message: Message) -> Any:
    """`message` as Triton writes it in JSON: field names as in the .proto, every field, 64-bit
    integers as numbers (protobuf's JSON has them as strings)."""
    data = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _numbers(data, message.DESCRIPTOR)  # type: ignore[arg-type]  # upb's Descriptor


def _numbers(data: dict[str, Any], descriptor: Descriptor) -> dict[str, Any]:
    for field in descriptor.fields:
        if field.name not in data:
            continue
        value = data[field.name]
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            value_field = entry.fields_by_name["value"]
            if value_field.message_type is not None:
                data[field.name] = {
                    k: _numbers(v, value_field.message_type) for k, v in value.items()
                }
        elif entry is not None:
            if field.is_repeated:
                data[field.name] = [_numbers(v, entry) for v in value]
            else:
                data[field.name] = _numbers(value, entry)
        elif field.type in _INTEGERS:
            is_list = field.is_repeated
            data[field.name] = [int(v) for v in value] if is_list else int(value)
    return data


def _parameter(value: kpb.InferParameter) -> Any:
    kind = value.WhichOneof("parameter_choice")
    return getattr(value, kind) if kind else None


def _set_parameter(parameter: kpb.InferParameter, value: Any, where: str) -> None:
    if isinstance(value, bool):
        parameter.bool_param = value
    elif isinstance(value, int):
        parameter.int64_param = value
    elif isinstance(value, float):
        parameter.double_param = value
    elif isinstance(value, str):
        parameter.string_param = value
    else:
        raise InvalidInput(f"{where}: a parameter is a bool, number or string, got {value!r}")


def _set_setting(setting: kpb.LogSettingsRequest.SettingValue, value: Any, name: str) -> None:
    if isinstance(value, bool):
        setting.bool_param = value
    elif isinstance(value, int) and value >= 0:
        setting.uint32_param = value
    elif isinstance(value, str):
        setting.string_param = value
    else:
        raise InvalidInput(f"log setting {name!r} is a bool, a whole number or a string")


def _set_trace_setting(
    setting: kpb.TraceSettingRequest.SettingValue, value: Any, name: str
) -> None:
    """A JSON trace setting: a string, a list of strings, or null (back to its default)."""
    values = [] if value is None else value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) for v in values):
        raise InvalidInput(f"trace setting {name!r} is a string, a list of strings or null")
    setting.value.extend(values)


def _flat(data: Any) -> Iterator[Any]:
    if isinstance(data, list):
        for item in data:
            yield from _flat(item)
    else:
        yield data


def infer_request(
    body: bytes, header_length: str | None, model: str, version: str
) -> tuple[kpb.ModelInferRequest, set[str] | None]:
    """A KServe v2 HTTP inference request (JSON, binary tensors after it) as the gRPC message,
    and the names of the outputs to send back as binary data (None: every output);
    InvalidInput says what is wrong."""
    try:
        length = len(body) if header_length is None else int(header_length)
        if not 0 <= length <= len(body):
            raise ValueError(f"{HEADER_LENGTH} {length} is not within the body's {len(body)} bytes")
        header = json.loads(body[:length])
        if not isinstance(header, dict):
            raise ValueError("the request is not a JSON object")
        request = kpb.ModelInferRequest(
            model_name=model, model_version=version, id=str(header.get("id", ""))
        )
        tail, offset = body[length:], 0
        for tensor in header.get("inputs", []):
            name, parameters = tensor["name"], tensor.get("parameters", {})
            message = request.inputs.add(
                name=name, datatype=tensor["datatype"], shape=[int(d) for d in tensor["shape"]]
            )
            size = parameters.get("binary_data_size")
            if size is not None:
                if offset + int(size) > len(tail):
                    raise ValueError(f"input {name!r}: binary_data_size {size} overruns the body")
                request.raw_input_contents.append(tail[offset : offset + int(size)])
                offset += int(size)
            else:
                _contents(message, tensor.get("data", []))
        if offset != len(tail):
            raise ValueError(f"{len(tail) - offset} bytes after the binary inputs belong to none")
        all_binary = bool(header.get("parameters", {}).get("binary_data_output", False))
        binary: set[str] = set()
        for output in header.get("outputs", []):
            name, parameters = output["name"], output.get("parameters", {})
            requested = request.outputs.add(name=name)
            for key, value in parameters.items():
                if key != "binary_data":
                    _set_parameter(requested.parameters[key], value, f"output {name!r}")
            if parameters.get("binary_data", all_binary):
                binary.add(name)
    except RequestError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise InvalidInput(f"not a KServe v2 inference request: {type(e).__name__}: {e}") from None
    return request, None if all_binary and not request.outputs else binary


def _contents(tensor: kpb.ModelInferRequest.InferInputTensor, data: Any) -> None:
    field = CONTENTS.get(tensor.datatype)
    if field is None:
        raise ValueError(f"input {tensor.name!r}: unknown datatype {tensor.datatype}")
    values = list(_flat(data))
    if tensor.datatype == "BYTES":
        values = [v.encode() if isinstance(v, str) else bytes(v) for v in values]
    getattr(tensor.contents, field).extend(values)


def infer_response(response: kpb.ModelInferResponse, binary: set[str] | None) -> Response:
    """The gRPC answer as Triton's HTTP one: outputs in `binary` (None: all) as binary data
    after the JSON, the others as JSON `data`."""
    outputs, chunks = [], []
    for output, raw in zip(response.outputs, response.raw_output_contents):
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": [int(d) for d in output.shape],
        }
        if binary is None or output.name in binary:
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif output.datatype == "BYTES":
            entry["data"] = [v.decode(errors="replace") for v in deserialize_bytes_tensor(raw)]
        else:
            entry["data"] = np.frombuffer(raw, triton_to_np_dtype(output.datatype)).tolist()
        outputs.append(entry)
    header = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        **({"id": response.id} if response.id else {}),
        "parameters": {k: _parameter(v) for k, v in response.parameters.items()},
        "outputs": outputs,
    }
    text = json.dumps(header).encode()
    if not chunks:
        return Response(text, media_type="application/json")
    return Response(
        b"".join([text, *chunks]),
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(text))},
    )


def error(code: grpc.StatusCode, message: str, status: int | None = None) -> JSONResponse:
    """Triton's error answer, with the HTTP status of gRPC `code` unless `status` is given."""
    return JSONResponse({"error": message}, status_code=status or HTTP_STATUS.get(code, 500))


Handler = Callable[[Request], Awaitable[Response]]


def _credentials(request: Request) -> tuple[list[tuple[str, str]], dict[str, list[bytes]]]:
    """What Authorizer.authenticate reads on gRPC: the `authorization` headers, and the client
    certificate's common name as gRPC's auth context has it."""
    metadata = [("authorization", v) for v in request.headers.getlist("authorization")]
    name = request.scope.get("state", {}).get(COMMON_NAME)
    return metadata, {"x509_common_name": [name.encode()]} if name else {}


def rest_app(
    service: KServeServicer, max_body_bytes: int, authorizer: Authorizer | None = None
) -> Starlette:
    """Triton's KServe v2 HTTP routes over `service`, each checked by `authorizer` (when
    given) with the scope of its gRPC method; bodies up to `max_body_bytes`, compressed with
    gzip or deflate or not; answers gzipped for clients that accept it."""

    def route(path: str, method: str, handle: Handler, *http_methods: str) -> list[Route]:
        """`path` and its /versions/{version} form, for `http_methods` (default GET), checked
        as gRPC `method`."""

        async def endpoint(request: Request) -> Response:
            try:
                if authorizer is not None:
                    authorizer.authorize(
                        authorizer.authenticate(*_credentials(request)), SERVICE + method
                    )
                return await handle(request)
            except Denied as e:
                log.warning("refused HTTP %s from %s: %s", method, request.client, e)
                return error(e.code, str(e))
            except BodyTooLarge as e:
                return error(e.code, str(e), 413)
            except (RequestError, Aborted) as e:
                return error(e.code, str(e))
            except Exception as e:
                failure = InternalFailure.logged(f"HTTP {method}", e)
                return error(failure.code, str(failure))

        paths = [path]
        if "{model}" in path:
            paths.append(path.replace("{model}", "{model}/versions/{version}"))
        return [Route(p, endpoint, methods=list(http_methods or ["GET"])) for p in paths]

    context = RestContext()

    def names(request: Request) -> tuple[str, str]:
        params = request.path_params
        return params.get("model", ""), params.get("version", "")

    async def live(request: Request) -> Response:
        answer = await service.ServerLive(kpb.ServerLiveRequest(), context)
        return Response(status_code=200 if answer.live else 400)

    async def ready(request: Request) -> Response:
        answer = await service.ServerReady(kpb.ServerReadyRequest(), context)
        return Response(status_code=200 if answer.ready else 400)

    async def model_ready(request: Request) -> Response:
        name, version = names(request)
        answer = await service.ModelReady(
            kpb.ModelReadyRequest(name=name, version=version), context
        )
        return Response(status_code=200 if answer.ready else 400)

    async def server_metadata(request: Request) -> Response:
        return JSONResponse(
            as_json(await service.ServerMetadata(kpb.ServerMetadataRequest(), context))
        )

    async def model_metadata(request: Request) -> Response:
        name, version = names(request)
        answer = await service.ModelMetadata(
            kpb.ModelMetadataRequest(name=name, version=version), context
        )
        return JSONResponse(as_json(answer))

    async def model_config(request: Request) -> Response:
        name, version = names(request)
        answer = await service.ModelConfig(
            kpb.ModelConfigRequest(name=name, version=version), context
        )
        return JSONResponse(as_json(answer.config))

    async def statistics(request: Request) -> Response:
        name, version = names(request)
        answer = await service.ModelStatistics(
            kpb.ModelStatisticsRequest(name=name, version=version), context
        )
        return JSONResponse(as_json(answer))

    async def repository_index(request: Request) -> Response:
        body = await read_body(request, max_body_bytes)
        try:
            ready_only = bool(json.loads(body).get("ready", False)) if body else False
        except (ValueError, AttributeError) as e:
            raise InvalidInput(f"the repository index request is not a JSON object: {e}") from None
        answer = await service.RepositoryIndex(
            kpb.RepositoryIndexRequest(ready=ready_only), context
        )
        models = as_json(answer)["models"]  # Triton leaves an empty reason out
        return JSONResponse([{k: v for k, v in m.items() if k != "reason" or v} for m in models])

    async def posted(request: Request, what: str, take: Callable[[str, Any], None]) -> None:
        """Give `take` each setting a POST sends (a JSON object of them); a GET sends none."""
        if request.method == "POST":
            try:
                for name, value in json.loads(await read_body(request, max_body_bytes)).items():
                    take(name, value)
            except (ValueError, AttributeError) as e:
                raise InvalidInput(f"{what} are a JSON object of settings: {e}") from None

    async def log_settings(request: Request) -> Response:
        message = kpb.LogSettingsRequest()
        await posted(request, "log settings", lambda n, v: _set_setting(message.settings[n], v, n))
        answer = await service.LogSettings(message, context)
        return JSONResponse({k: _parameter(v) for k, v in answer.settings.items()})

    async def trace_settings(request: Request) -> Response:
        message = kpb.TraceSettingRequest(model_name=names(request)[0])
        await posted(
            request, "trace settings", lambda n, v: _set_trace_setting(message.settings[n], v, n)
        )
        answer = await service.TraceSetting(message, context)
        return JSONResponse(  # as Triton: the level a list, the others one string
            {
                k: list(v.value) if k == "trace_level" else "".join(v.value[:1])
                for k, v in answer.settings.items()
            }
        )

    async def infer(request: Request) -> Response:
        name, version = names(request)
        message, binary = infer_request(
            await read_body(request, max_body_bytes),
            request.headers.get(HEADER_LENGTH),
            name,
            version,
        )
        answer = await service.ModelInfer(message, RestContext(request.headers))
        return infer_response(answer, binary)

    routes: list[BaseRoute] = [
        *route("/v2/health/live", "ServerLive", live),
        *route("/v2/health/ready", "ServerReady", ready),
        *route("/v2", "ServerMetadata", server_metadata),
        *route("/v2/models/stats", "ModelStatistics", statistics),
        *route("/v2/models/{model}/ready", "ModelReady", model_ready),
        *route("/v2/models/{model}/config", "ModelConfig", model_config),
        *route("/v2/models/{model}/stats", "ModelStatistics", statistics),
        *route("/v2/models/{model}/infer", "ModelInfer", infer, "POST"),
        *route("/v2/repository/index", "RepositoryIndex", repository_index, "POST"),
        *route("/v2/logging", "LogSettings", log_settings, "GET", "POST"),
        *route("/v2/trace/setting", "TraceSetting", trace_settings, "GET", "POST"),
        *route("/v2/models/{model}/trace/setting", "TraceSetting", trace_settings, "GET", "POST"),
        *route("/v2/models/{model}", "ModelMetadata", model_metadata),
    ]

    async def no_route(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        message = (
            f"{request.method} {request.url.path}: {'no such route' if status == 404 else exc}"
        )
        return JSONResponse({"error": f"{message} (KServe v2 routes are under /v2)"}, status)

    return Starlette(
        routes=routes,
        middleware=[Middleware(GZipMiddleware)],
        exception_handlers={HTTPException: no_route},
    )
