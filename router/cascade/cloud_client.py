"""The client to the cloud tier: KServe v2 over gRPC (tritonclient's asyncio API)."""

from __future__ import annotations

import asyncio
from typing import Any

import tritonclient.grpc as grpcclient
from numpy.typing import NDArray
from tritonclient.utils import InferenceServerException

from edgecascade.cloud.common import tracing
from edgecascade.cloud.common.manifest import (
    INPUT_NAME,
    LABELS_PARAMETER,
    OUTPUT_NAME,
    Manifest,
    ModelSpec,
)
from edgecascade.cloud.common.transport import FAST_RECONNECT, PLAINTEXT, Transport, retry_options
from edgecascade.router.cascade.degraded import DegradedReason

# An inference whose server went away (UNAVAILABLE: connection lost, or a gateway with no
# endpoint left for it) is sent once more, within the caller's deadline; through a gateway it
# lands on another Triton. Inference is idempotent.
CLOUD_CHANNEL_OPTIONS = [
    *FAST_RECONNECT,
    *retry_options("inference.GRPCInferenceService", "ModelInfer"),
]


class CloudError(Exception):
    """The cloud could not answer; `reason` is the degraded reason reported to clients."""

    def __init__(self, reason: DegradedReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _reason(status: str | None) -> DegradedReason:
    if status == "StatusCode.DEADLINE_EXCEEDED":
        return DegradedReason.CLOUD_TIMEOUT
    if status in ("StatusCode.UNAVAILABLE", "StatusCode.CANCELLED"):
        return DegradedReason.CLOUD_UNAVAILABLE
    if status == "StatusCode.NOT_FOUND":  # Triton: unknown model or version
        return DegradedReason.VERSION_MISMATCH
    return DegradedReason.CLOUD_ERROR


class CloudClient:
    """Calls one cloud model version (the one the manifest pins) on a Triton endpoint.

    Create it inside the event loop that will use it (gRPC asyncio channels are bound to it).
    """

    def __init__(self, url: str, spec: ModelSpec, transport: Transport = PLAINTEXT):
        """`transport`: TLS and the token (sent as `headers` on every call: tritonclient's
        calls do not pass through the transport's metadata interceptors). An inference also
        sends the current span's W3C trace context, which Triton's own spans continue, and
        its trace id as Triton's request id."""
        self.url = url
        self.spec = spec
        self._client = transport.triton_aio(url, options=CLOUD_CHANNEL_OPTIONS)
        self._headers = transport.headers or None

    async def infer(self, image: NDArray[Any], timeout_s: float) -> NDArray[Any]:
        """Logits [classes] for one uint8 [H, W, C] image, or CloudError within `timeout_s`."""
        logits: NDArray[Any] = (await self.infer_batch(image[None], timeout_s))[0]
        return logits

    async def infer_batch(self, batch: NDArray[Any], timeout_s: float) -> NDArray[Any]:
        """Logits [N, classes] for uint8 [N, H, W, C] images, or CloudError."""
        tensor = grpcclient.InferInput(INPUT_NAME, list(batch.shape), "UINT8")
        tensor.set_data_from_numpy(batch)
        trace_headers = tracing.outgoing_headers()
        ids = tracing.current_ids() if trace_headers else None
        try:
            result = await self._client.infer(
                self.spec.name,
                [tensor],
                model_version=str(self.spec.version),
                outputs=[grpcclient.InferRequestedOutput(OUTPUT_NAME)],
                headers={**(self._headers or {}), **trace_headers} or None,
                request_id=ids[0] if ids else "",  # Triton's request id: the trace id
                client_timeout=timeout_s,
            )
        except InferenceServerException as e:
            raise CloudError(_reason(e.status()), e.message() or str(e)) from e
        logits: NDArray[Any] | None = result.as_numpy(OUTPUT_NAME)
        if logits is None:
            raise CloudError(DegradedReason.CLOUD_ERROR, f"response has no {OUTPUT_NAME!r} output")
        if len(logits) != len(batch):
            raise CloudError(
                DegradedReason.CLOUD_ERROR, f"{len(logits)} rows of logits for {len(batch)} images"
            )
        return logits

    async def ready(self, timeout_s: float = 1.0) -> bool:
        """Whether the pinned model version is ready to serve; False after `timeout_s`. The
        call is also bounded here: one asked while a model update closed this client's channel
        never returned, and GetStatus waited past its caller's 5 s deadline (CI, once)."""
        call = self._client.is_model_ready(
            self.spec.name, str(self.spec.version), headers=self._headers, client_timeout=timeout_s
        )
        try:
            return bool(await asyncio.wait_for(call, timeout_s + 0.5))
        except (InferenceServerException, TimeoutError):
            return False

    async def pairing_problem(self, manifest: Manifest, timeout_s: float = 2.0) -> str | None:
        """Why the cloud cannot answer for `manifest`'s pair, or None when it can or when the
        cloud cannot be reached (an outage, for the breaker, not a mismatch)."""
        try:
            if not await self._client.is_server_ready(
                headers=self._headers, client_timeout=timeout_s
            ):
                return None
            if not await self.ready(timeout_s):
                return f"Triton has no ready version {self.spec.version} of {self.spec.name}"
            config = (
                await self._client.get_model_config(
                    self.spec.name, headers=self._headers, client_timeout=timeout_s
                )
            ).config
        except InferenceServerException:
            return None
        served = config.parameters.get(LABELS_PARAMETER)
        if served is not None and served.string_value != manifest.labels_sha256:
            return (
                f"{self.spec.name} serves label map {served.string_value[:12]}…, "
                f"the manifest pairs {manifest.labels_sha256[:12]}…"
            )
        return None

    async def close(self) -> None:
        await self._client.close()
