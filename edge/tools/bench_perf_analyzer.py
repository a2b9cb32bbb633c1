"""`edgecascade bench perf-analyzer`: Triton's own load tool, unmodified, on every tier.

perf_analyzer (from tritonclient's manylinux wheel, `make perf-analyzer`) drives KServe v2
gRPC, or HTTP/REST (binary tensors), at a fixed concurrency and reads the server's
ModelStatistics before and after each window, so it reports the server-side queue and compute
times next to the client's latency. It is pointed, in one run and with the same camera images,
for each protocol asked (targets over HTTP are named `<target>_http`), at:

- `agent`: the edge agent's `fashion` (escalating what its policy escalates, through the
  gateway);
- `gateway`: the family model `fashion` on Triton, through the router gateway;
- `triton`: the same family model, straight to Triton;
- `triton_cloud_model`: the bare cloud model `fashion_cloud` (preprocessed pixels), the floor.
"""

from __future__ import annotations

import base64
import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table
from tritonclient.utils import serialize_byte_tensor

from edgecascade.cloud.common.errors import UserError
from edgecascade.cloud.common.manifest import INPUT_NAME, Manifest
from edgecascade.cloud.common.ports import free_port
from edgecascade.cloud.common.preprocessing import decode_image, prepare
from edgecascade.cloud.triton.repository import write_repository
from edgecascade.cloud.triton.server import TritonServer
from edgecascade.edge.tools.families import built_family
from edgecascade.edge.tools.process import EdgeProcess
from edgecascade.edge.tools.samples import labelled_frames
from edgecascade.router.gateway.process import GatewayProcess

console = Console()
INSTALL_HINT = "perf_analyzer is not installed: run `make perf-analyzer` (Linux x86-64)"
# perf_analyzer's CSV columns (microseconds) and the report's names for them; the average
# latency is the sum of client send, network + server send/recv (the remainder), server queue,
# server compute input/infer/output and client receive
COLUMNS = {
    "Inferences/Second": "throughput",
    "p50 latency": "p50_us",
    "p99 latency": "p99_us",
    "Client Send": "client_send_us",
    "Network+Server Send/Recv": "network_us",
    "Client Recv": "client_recv_us",
    "Server Queue": "server_queue_us",
    "Server Compute Input": "server_compute_input_us",
    "Server Compute Infer": "server_compute_infer_us",
    "Server Compute Output": "server_compute_output_us",
}


@dataclass(frozen=True)
class Window:
    """How perf_analyzer measures: each concurrency of `concurrency` (its --concurrency-range,
    start:end:step) until `stability` (%) holds over 3 windows of `interval_ms`, or
    `max_trials` windows."""

    concurrency: str = "1:4:3"
    interval_ms: int = 2000
    stability: int = 10
    max_trials: int = 10

    def concurrencies(self) -> list[int]:
        """The concurrencies the range names (perf_analyzer's defaults: end = start, step 1)."""
        start, end, step = [*map(int, self.concurrency.split(":")), 0, 0][:3]
        return list(range(start, max(end, start) + 1, step or 1))


def perf_analyzer_binary() -> Path:
    """The perf_analyzer executable next to this interpreter, or on PATH."""
    beside = Path(sys.executable).parent / "perf_analyzer"
    found = beside if beside.exists() else shutil.which("perf_analyzer")
    if found is None:
        raise UserError(INSTALL_HINT)
    return Path(found)


def _environment() -> dict[str, str]:
    """perf_analyzer links libcudart even on CPU: the nvidia-cuda-runtime wheel's lib folder."""
    env = dict(os.environ)
    spec = importlib.util.find_spec("nvidia.cuda_runtime")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"{INSTALL_HINT} (nvidia-cuda-runtime-cu12 is missing)")
    lib = Path(next(iter(spec.submodule_search_locations))) / "lib"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(lib), env.get("LD_LIBRARY_PATH")]))
    return env


def _input_files(manifest: Manifest, work: Path, images: int) -> dict[str, Path]:
    """perf_analyzer's --input-data: the camera's PNG frames for the family's `image` input,
    and the same images preprocessed (uint8 pixels) for the bare cloud model."""
    frames = labelled_frames(manifest.family, images)
    # perf_analyzer sends "b64" content as it is: a BYTES tensor's serialized form
    encoded = [
        {INPUT_NAME: {"b64": base64.b64encode(_serialized(f.encoded)).decode()}} for f in frames
    ]
    pixels = [prepare(decode_image(f.encoded), manifest.cloud.preprocessing) for f in frames]
    raw = [
        {INPUT_NAME: {"content": p.reshape(-1).tolist(), "shape": list(p.shape)}} for p in pixels
    ]
    files = {"encoded": work / "encoded.json", "pixels": work / "pixels.json"}
    files["encoded"].write_text(json.dumps({"data": encoded}))
    files["pixels"].write_text(json.dumps({"data": raw}))
    return files


def _serialized(encoded: bytes) -> bytes:
    serialized: bytes = serialize_byte_tensor(np.array([encoded], dtype=object)).item()
    return serialized


PROTOCOLS = ("grpc", "http")


def run_perf_analyzer(
    url: str,
    model: str,
    data: Path,
    window: Window,
    csv_path: Path,
    *,
    shape: str | None,
    protocol: str = "grpc",
) -> list[dict[str, float]]:
    """One perf_analyzer run on `model` at `url` (KServe v2 over `protocol`, one of
    PROTOCOLS); a row per concurrency."""
    command = [
        str(perf_analyzer_binary()),
        *("-m", model, "-u", url, "-i", protocol),
        *("--input-data", str(data)),
        *(["--shape", shape] if shape else []),
        *("--concurrency-range", window.concurrency),
        *("--measurement-interval", str(window.interval_ms)),
        *("--stability-percentage", str(window.stability)),
        *("--max-trials", str(window.max_trials)),
        *("-f", str(csv_path)),
    ]
    done = subprocess.run(command, env=_environment(), capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-8:])
        raise RuntimeError(f"perf_analyzer on {model} at {url} failed:\n{tail}")
    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    measured = [
        {"concurrency": int(row["Concurrency"])}
        | {name: float(row[column]) for column, name in COLUMNS.items()}
        for row in rows
    ]
    return sorted(measured, key=lambda row: row["concurrency"])  # its CSV is by throughput


def run_bench(
    report: Path,
    window: Window = Window(),
    images: int = 100,
    protocols: tuple[str, ...] = ("grpc",),
) -> dict[str, Any]:
    """Run perf_analyzer on the four targets over each of `protocols`, write the JSON report
    and return it."""
    perf_analyzer_binary()  # fail before starting servers
    manifest = Manifest.load(built_family("fashion"))
    with tempfile.TemporaryDirectory(prefix="edgecascade-perf-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        files = _input_files(manifest, work, images)
        write_repository([manifest], work / "repository")
        triton = stack.enter_context(
            TritonServer(work / "repository", log_path=work / "triton.log")
        )
        http = {"agent": free_port(), "gateway": free_port()}
        gateway = stack.enter_context(
            GatewayProcess([triton.grpc_url], work / "gateway.log", http_port=http["gateway"])
        )
        agent = stack.enter_context(
            EdgeProcess(
                "fashion", gateway.url, work / "agent.log", "--http-port", str(http["agent"])
            )
        )
        urls = {
            "grpc": {"agent": agent.address, "gateway": gateway.url, "triton": triton.grpc_url},
            "http": {name: f"127.0.0.1:{port}" for name, port in http.items()}
            | {"triton": triton.http_url},
        }
        encoded = (files["encoded"], f"{INPUT_NAME}:1")
        targets = {
            f"{name}{'' if protocol == 'grpc' else '_' + protocol}": (protocol, url, model, data)
            for protocol in protocols
            for name, url, model, data in (
                ("agent", urls[protocol]["agent"], manifest.family, encoded),
                ("gateway", urls[protocol]["gateway"], manifest.family, encoded),
                ("triton", urls[protocol]["triton"], manifest.family, encoded),
                (
                    "triton_cloud_model",
                    urls[protocol]["triton"],
                    manifest.cloud.name,
                    (files["pixels"], None),
                ),
            )
        }
        rows = {
            name: run_perf_analyzer(
                url, model, data, window, work / f"{name}.csv", shape=shape, protocol=protocol
            )
            for name, (protocol, url, model, (data, shape)) in track(
                targets.items(), description="perf_analyzer", console=console
            )
        }
    result = {
        "tool": "perf_analyzer (tritonclient 2.51 manylinux wheel), KServe v2 over "
        + " and ".join("gRPC" if p == "grpc" else "HTTP/REST" for p in protocols),
        "images": images,
        "window": {
            "concurrency_range": window.concurrency,
            "interval_ms": window.interval_ms,
            "stability_percent": window.stability,
        },
        "targets": {
            name: {
                "protocol": targets[name][0],
                "model": targets[name][2],
                "rows": rows[name],
                # perf_analyzer leaves out a concurrency it could not measure within its
                # stability percentage in max_trials windows (a busy machine)
                "unstable_concurrencies": sorted(
                    set(window.concurrencies()) - {row["concurrency"] for row in rows[name]}
                ),
            }
            for name in rows
        },
    }
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(result, indent=2))
    _print(result)
    return result


def _print(result: dict[str, Any]) -> None:
    table = Table(title="perf_analyzer, one run (latency in ms)")
    for column in ("target", "model", "conc.", "infer/s", "p50", "p99", "server queue",
                   "server compute"):  # fmt: skip
        table.add_column(
            column, justify="left" if column in ("target", "model") else "right", no_wrap=True
        )
    for name, target in result["targets"].items():
        for row in target["rows"]:
            compute = sum(
                row[k]
                for k in ("server_compute_input_us", "server_compute_infer_us",
                          "server_compute_output_us")
            )  # fmt: skip
            table.add_row(
                name,
                target["model"],
                str(row["concurrency"]),
                f"{row['throughput']:.0f}",
                f"{row['p50_us'] / 1e3:.2f}",
                f"{row['p99_us'] / 1e3:.2f}",
                f"{row['server_queue_us'] / 1e3:.2f}",
                f"{compute / 1e3:.2f}",
            )
        for concurrency in target["unstable_concurrencies"]:
            table.add_row(name, target["model"], str(concurrency), "not stable", *[""] * 4)
    console.print(table)
