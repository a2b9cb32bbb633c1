"""A Python client of the edge agent's Cascade service, shaped like tritonclient's:
`CascadeClient` here (blocking) and in `edgecascade.client.aio` (asyncio), typed results, one
exception type; `Tls` (the transport's) names the CA and client certificate files for TLS.

    with CascadeClient("127.0.0.1:8001") as client:
        result = client.classify(png_bytes, top_k=3, client_timeout=5)
        print(result.name, result.score, result.tier, result.degraded_reason)
"""

from edgecascade.client._blocking import CascadeClient
from edgecascade.client._calls import Image
from edgecascade.client.errors import CascadeError
from edgecascade.client.results import (
    AuditAgreement,
    BatchCount,
    ClassifyResult,
    DegradedReason,
    ModelVersions,
    Prediction,
    Status,
    Tier,
    Timings,
)
from edgecascade.cloud.common.transport import Tls

__all__ = [
    "AuditAgreement",
    "BatchCount",
    "CascadeClient",
    "CascadeError",
    "ClassifyResult",
    "DegradedReason",
    "Image",
    "ModelVersions",
    "Prediction",
    "Status",
    "Tier",
    "Timings",
    "Tls",
]
