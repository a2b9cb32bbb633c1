"""Every Triton control and readiness call of the project has a `client_timeout`: a Triton that
hangs must not hang the gateway, the agent, a roll-out or a launcher's ready check."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aio_grpcclient

ROOT = Path(__file__).resolve().parents[2]
DATA_PLANE = {"infer", "async_infer"}  # the callers' own deadlines apply (cascade, benchmarks)


def timed_methods() -> set[str]:
    """tritonclient's control and readiness methods: those that take a client_timeout."""
    return {
        name
        for cls in (grpcclient.InferenceServerClient, aio_grpcclient.InferenceServerClient)
        for name, method in inspect.getmembers(cls, callable)
        if not name.startswith("_") and "client_timeout" in inspect.signature(method).parameters
    } - DATA_PLANE


def calls(path: Path) -> list[ast.Call]:
    return [node for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Call)]


def test_the_methods_are_the_control_and_readiness_api() -> None:
    methods = timed_methods()
    assert {"is_server_ready", "is_model_ready", "load_model", "unload_model"} <= methods
    assert not methods & DATA_PLANE


def test_every_control_and_readiness_call_passes_client_timeout() -> None:
    methods = timed_methods()
    untimed = [
        f"{path.relative_to(ROOT)}:{call.lineno}: {call.func.attr}"
        for tier in ("edge", "router", "cloud")
        for path in sorted((ROOT / tier).rglob("*.py"))
        for call in calls(path)
        if isinstance(call.func, ast.Attribute)
        and call.func.attr in methods
        and not any(keyword.arg == "client_timeout" for keyword in call.keywords)
    ]
    assert not untimed, f"pass client_timeout: {untimed}"


def test_no_client_method_is_looked_up_by_name() -> None:
    """getattr(client, f"{action}_model") would hide a call from the test above."""
    dynamic = [
        f"{path.relative_to(ROOT)}:{call.lineno}"
        for tier in ("edge", "router", "cloud")
        for path in sorted((ROOT / tier).rglob("*.py"))
        for call in calls(path)
        if isinstance(call.func, ast.Name)
        and call.func.id == "getattr"
        and len(call.args) >= 2
        and not isinstance(call.args[1], ast.Constant)
        and "client" in ast.unparse(call.args[0]).lower()
    ]
    assert not dynamic, dynamic
