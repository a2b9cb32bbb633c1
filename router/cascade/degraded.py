"""Why an escalated input was answered at the edge: the wire contract's DegradedReason enum
(`edgecascade.v1.DegradedReason`) as the code uses it, with the text form of each value (the
`degraded_reason` string field, the KServe `degraded_reason` parameter, the metric label)."""

from __future__ import annotations

from enum import StrEnum
from typing import cast

from edgecascade.v1 import cascade_pb2 as pb


class DegradedReason(StrEnum):
    """One member per non-zero value of `edgecascade.v1.DegradedReason`, under its name; the
    value is the name in lower case with dashes (tests/unit/test_degraded_reasons.py checks)."""

    CLOUD_UNAVAILABLE = "cloud-unavailable"
    CLOUD_TIMEOUT = "cloud-timeout"
    CLOUD_ERROR = "cloud-error"
    DEADLINE = "deadline"
    VERSION_MISMATCH = "version-mismatch"
    BUDGET = "budget"

    @property
    def code(self) -> pb.DegradedReason:
        """The wire enum's value."""
        return cast("pb.DegradedReason", pb.DegradedReason.Value(self.name))
