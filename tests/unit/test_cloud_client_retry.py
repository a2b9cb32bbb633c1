"""The cloud client sends an inference once more when its server went away (UNAVAILABLE), and
only then: real gRPC over loopback against a small KServe server that fails on demand."""

import asyncio

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from edgecascade.cloud.common.manifest import OUTPUT_NAME, ModelSpec, Preprocessing
from edgecascade.router.cascade.cloud_client import CloudClient, CloudError
from tests.kserve_server import start_kserve

pytestmark = pytest.mark.integration  # loopback gRPC servers

LOGITS = np.arange(10, dtype=np.float32)[None]
SPEC = ModelSpec(
    name="m",
    version=1,
    precision="fp32",
    files={},
    preprocessing=Preprocessing(color="gray", size=28, resize_short=28),
)


async def serve(failures: list[grpc.StatusCode]):
    """A KServe ModelInfer that fails with each of `failures` in turn, then answers."""
    calls: list[int] = []

    async def infer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        calls.append(1)
        if len(calls) <= len(failures):
            await context.abort(failures[len(calls) - 1], "told to fail")
        output = service_pb2.ModelInferResponse.InferOutputTensor(
            name=OUTPUT_NAME, datatype="FP32", shape=list(LOGITS.shape)
        )
        response = service_pb2.ModelInferResponse(model_name="m", outputs=[output])
        response.raw_output_contents.append(LOGITS.tobytes())
        return response.SerializeToString()

    server, url = await start_kserve({"ModelInfer": infer})
    return server, url, calls


def run(failures: list[grpc.StatusCode]) -> tuple[np.ndarray | CloudError, int]:
    async def main():
        server, url, calls = await serve(failures)
        client = CloudClient(url, SPEC)
        try:
            result = await client.infer(np.zeros((28, 28, 1), np.uint8), timeout_s=5.0)
        except CloudError as e:
            result = e
        finally:
            await client.close()
            await server.stop(None)
        return result, len(calls)

    return asyncio.run(main())


def test_an_unavailable_server_gets_one_more_try():
    logits, calls = run([grpc.StatusCode.UNAVAILABLE])
    assert calls == 2
    np.testing.assert_array_equal(logits, LOGITS[0])


@pytest.mark.parametrize(
    ("failures", "reason", "calls"),
    [
        ([grpc.StatusCode.UNAVAILABLE] * 2, "cloud-unavailable", 2),  # one retry, no more
        ([grpc.StatusCode.NOT_FOUND], "version-mismatch", 1),  # other errors: none
        ([grpc.StatusCode.INTERNAL], "cloud-error", 1),
    ],
)
def test_other_failures_are_not_retried_and_keep_their_reason(failures, reason, calls):
    error, made = run(failures)
    assert isinstance(error, CloudError) and error.reason == reason
    assert made == calls
