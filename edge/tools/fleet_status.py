"""`edgecascade status`: what each edge agent serves and how it is doing."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.table import Table

from edgecascade.cloud.common.transport import PLAINTEXT, Transport
from edgecascade.v1 import cascade_pb2 as pb
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc


def agent_status(
    address: str, transport: Transport = PLAINTEXT, timeout_s: float = 3.0
) -> dict[str, Any]:
    """Health and GetStatus of one agent; {"address", "health": "UNREACHABLE", "error"} when
    it cannot be asked (a refused caller: the error says why)."""
    with transport.channel(address) as channel:
        try:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout_s
            )
            status = pb_grpc.CascadeStub(channel).GetStatus(
                pb.GetStatusRequest(), timeout=timeout_s
            )
        except grpc.RpcError as e:
            error = e.code().name
            if e.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                error += f": {e.details()}"
            return {"address": address, "health": "UNREACHABLE", "error": error}
    return {
        "address": address,
        "health": health_pb2.HealthCheckResponse.ServingStatus.Name(health.status),
        "family": status.versions.family,
        "manifest_version": status.manifest_version,
        "previous_version": status.previous_version,
        "edge": status.versions.edge,
        "cloud": status.versions.cloud,
        "device": status.device,
        "policy": f"{status.policy} < {status.threshold:.4f}",
        "breaker": status.breaker,
        "cloud_latency_ms": {
            "ewma": status.cloud_latency_ewma_ms,
            "p95": status.cloud_latency_p95_ms,
        },
        "requests": status.requests,
        "escalations": status.escalations,
        "degraded": status.degraded,
        "errors": status.errors,
        "version_mismatch": status.version_mismatch,
        "update_error": status.update_error,
        "insecure_hops": list(status.insecure_hops),
        "uploads": {
            "kept": status.examples_uploaded,
            "already_kept": status.examples_already_kept,
            "failures": status.upload_failures,
            "error": status.upload_error,
        },
        "audit": [
            {
                "family": a.family,
                "edge": a.edge_version,
                "audited": a.audited,
                "agreement": a.agreement,
                "interval": [a.lower, a.upper],
                "below_bound": a.below_bound,
            }
            for a in status.audit
        ],
    }


def audit_note(audit: dict[str, Any]) -> str:
    """One audit entry as a table note; a WARNING when its agreement is below the bound."""
    lower, upper = audit["interval"]
    text = (
        f"audit {audit['edge']}: {100 * audit['agreement']:.1f}% agree "
        f"({100 * lower:.1f}-{100 * upper:.1f}%) of {audit['audited']}"
    )
    return f"[red]WARNING {text}, below the bound[/red]" if audit["below_bound"] else text


def status_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="edge agents")
    for column in (
        "agent",
        "health",
        "family",
        "version",
        "edge / cloud",
        "escalate when",
        "breaker",
        "cloud ms ewma / p95",
        "requests",
        "escalated",
        "degraded",
        "notes",
    ):
        table.add_column(column)
    for r in rows:
        if r["health"] == "UNREACHABLE":
            table.add_row(r["address"], "[red]UNREACHABLE", *[""] * 9, r["error"])
            continue
        latency = r["cloud_latency_ms"]
        insecure = f"INSECURE: {', '.join(r['insecure_hops'])}" if r["insecure_hops"] else ""
        audits = [audit_note(a) for a in r["audit"]]
        uploads = r["uploads"]
        upload = (
            f"[red]example upload failing: {uploads['error']}[/red]" if uploads["error"] else ""
        )
        notes = "; ".join(
            n for n in (insecure, r["version_mismatch"], r["update_error"], upload, *audits) if n
        )
        previous = f" (prev {r['previous_version']})" if r["previous_version"] else ""
        table.add_row(
            r["address"],
            r["health"],
            r["family"],
            f"{r['manifest_version']}{previous}",
            f"{r['edge']} / {r['cloud']}",
            r["policy"],
            r["breaker"],
            f"{latency['ewma']:.1f} / {latency['p95']:.1f}",
            str(r["requests"]),
            str(r["escalations"]),
            str(r["degraded"]),
            notes,
        )
    return table
