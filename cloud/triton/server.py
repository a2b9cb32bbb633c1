"""Run the tritonserver binary shipped in the nvidia-pytriton wheel on a model repository.

The wheel's server needs a backend folder assembled next to it (the python backend plus the
stub built for this Python), LD_LIBRARY_PATH with this interpreter's LIBDIR (the stub links
libpython) and the wheel's bundled libraries, and this interpreter first on PATH: the stub's
embedded Python takes its prefix from `python3` on PATH, so without it model.py would get the
base interpreter's packages (a numpy 2 there silently returns empty outputs).
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Self

from edgecascade.cloud.common import tracing
from edgecascade.cloud.common.errors import UserError
from edgecascade.cloud.common.launcher import ChildFailed, ChildProcess
from edgecascade.cloud.common.ports import free_port
from edgecascade.cloud.common.transport import Tls, Transport
from edgecascade.cloud.triton.control import ModelControl

HOST = "127.0.0.1"
READY_TIMEOUT_S = 1.0  # how long one readiness call of the ready check may take
# Triton's protocols that change what it serves or reads: with an admin key, they answer only
# calls that carry the key in this header (--grpc-restricted-protocol); the gateway adds it for
# its admin callers only and strips it from everyone else's.
ADMIN_KEY_NAME = "edgecascade-admin-key"
ADMIN_KEY_HEADER = f"triton-grpc-protocol-{ADMIN_KEY_NAME}"  # Triton's prefix on gRPC
RESTRICTED_PROTOCOLS = ("model-repository", "shared-memory", "trace", "logging")
ADMIN_KEY_RULE = "the admin key must be letters and digits (it travels as a header value)"


def wheel_root() -> Path:
    """The ``pytriton/tritonserver`` folder of the installed wheel."""
    import pytriton

    return Path(pytriton.__file__).parent / "tritonserver"


class TritonServerError(ChildFailed):
    """The server died or did not become ready; the message ends with its log tail."""


class TritonServer(ChildProcess):
    """A local tritonserver process on loopback ports; use as a context manager.

    `model_control_mode="explicit"` loads only `load_models` at start; the others are loaded
    and unloaded with `load_model` / `unload_model` (see `edgecascade.cloud.registry.rollout`).
    It is ready once it and every model it loads are; `stop` gives it 10 s after SIGTERM, then
    kills its process group (the python backend stubs too).

    `tls` serves gRPC over TLS (its `cert`/`key`; with `require_client_cert`, mutual TLS with
    client certificates signed by its `ca`); its own readiness and control calls then use
    `client_tls`. `admin_key` restricts RESTRICTED_PROTOCOLS on gRPC and HTTP to calls that
    send it in ADMIN_KEY_HEADER (its own calls do). Triton takes the key on its command line:
    local users of the host can read it there, so run Triton where they cannot.

    `otlp_endpoint` turns on Triton's OpenTelemetry tracing (`triton_tracing`).
    """

    name = "tritonserver"

    def __init__(
        self,
        repository: Path,
        *,
        grpc_port: int | None = None,
        http_port: int | None = None,
        metrics_port: int | None = None,
        log_path: Path | None = None,
        log_verbose: int = 0,
        model_control_mode: Literal["none", "explicit"] = "none",
        load_models: Sequence[str] = (),
        tls: Tls | None = None,
        client_tls: Tls | None = None,
        admin_key: str | None = None,
        otlp_endpoint: str | None = None,
        trace_rate: int = 0,
    ) -> None:
        if load_models and model_control_mode != "explicit":
            raise ValueError("load_models needs model_control_mode='explicit'")
        if (tls is None) != (client_tls is None):
            raise ValueError("a TLS Triton needs client_tls for its own calls, and only it")
        if tls is not None and tls.cert is None:
            raise ValueError("a TLS Triton needs its certificate and key")
        if admin_key is not None and not admin_key.isalnum():
            raise ValueError(ADMIN_KEY_RULE)
        self.repository = Path(repository).resolve()
        self.model_control_mode = model_control_mode
        self.load_models = tuple(load_models)
        self.grpc_port = grpc_port or free_port()
        self.http_port = http_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self._runtime = Path(tempfile.mkdtemp(prefix="edgecascade-triton-"))
        command = [
            str(wheel_root() / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={self._runtime / 'backends'}",
            f"--grpc-address={HOST}",
            f"--grpc-port={self.grpc_port}",
            f"--http-address={HOST}",
            f"--http-port={self.http_port}",
            f"--metrics-address={HOST}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            "--pinned-memory-pool-byte-size=0",
            "--strict-readiness=true",
            "--exit-on-error=true",
            f"--log-verbose={log_verbose}",
            f"--model-control-mode={model_control_mode}",
            *(f"--load-model={name}" for name in self.load_models),
            *_tls_options(tls),
            *(triton_tracing(otlp_endpoint, trace_rate) if otlp_endpoint else []),
        ]
        headers: tuple[tuple[str, str], ...] = ()
        if admin_key is not None:
            restricted = f"{','.join(RESTRICTED_PROTOCOLS)}:{ADMIN_KEY_NAME}={admin_key}"
            command += [
                f"--grpc-restricted-protocol={restricted}",
                f"--http-restricted-api={restricted}",
            ]
            headers = ((ADMIN_KEY_HEADER, admin_key),)
        self.client = Transport(tls=client_tls, metadata=headers)
        log = Path(log_path).resolve() if log_path else self._runtime / "tritonserver.log"
        super().__init__(command, log, env=_server_env(), cwd=self._runtime)

    @property
    def grpc_url(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"{HOST}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{HOST}:{self.metrics_port}/metrics"

    @property
    def control(self) -> ModelControl:
        return ModelControl(self.grpc_url, transport=self.client)

    def load_model(self, name: str) -> None:
        """(Re)load `name` with the versions its config lists (explicit mode)."""
        self.control.load(name)

    def unload_model(self, name: str) -> None:
        """Unload every version of `name` (explicit mode)."""
        self.control.unload(name)

    def start(self, timeout_s: float = 120.0) -> Self:
        """Launch the server and wait until it and every model it loads are ready."""
        if self.is_running():
            raise TritonServerError(f"tritonserver already running (pid {self.pid})")
        self._prepare_backends()
        try:
            return super().start(timeout_s)
        except ChildFailed as e:
            raise TritonServerError(str(e)) from e

    def stop(self, grace_s: float | None = None) -> None:
        """Stop the server (see ChildProcess.stop) and remove its runtime folder, but for a
        log kept there; idempotent."""
        super().stop(grace_s)
        assert self.log_path is not None
        keep_log = self.log_path.parent == self._runtime
        shutil.rmtree(self._runtime / "backends" if keep_log else self._runtime, ignore_errors=True)

    def ready(self) -> bool:
        with self.client.triton(self.grpc_url) as client:
            if not client.is_server_ready(client_timeout=READY_TIMEOUT_S):
                return False
            if self.model_control_mode == "explicit":
                names = [(name, "") for name in self.load_models]
            else:
                index = client.get_model_repository_index(
                    headers=self.client.headers, client_timeout=READY_TIMEOUT_S
                )
                names = [(m.name, m.version) for m in index.models]
            return all(
                client.is_model_ready(name, version, client_timeout=READY_TIMEOUT_S)
                for name, version in names
            )

    def _prepare_backends(self) -> None:
        """backends/python = the wheel's python backend + the stub for this Python version."""
        backends = self._runtime / "backends"
        shutil.copytree(
            wheel_root() / "backends",
            backends,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        stub = (
            wheel_root()
            / "python_backend_stubs"
            / f"{sys.version_info.major}.{sys.version_info.minor}"
        )
        shutil.copy2(stub / "triton_python_backend_stub", backends / "python")


def read_admin_key(path: Path) -> str:
    """The admin key in file `path` (surrounding whitespace dropped); UserError saying why
    it cannot be used."""
    try:
        key = Path(path).read_text().strip()
    except OSError as e:
        raise UserError(f"admin key file {path} cannot be read: {e.strerror}") from None
    if not key.isalnum():
        raise UserError(f"admin key file {path}: {ADMIN_KEY_RULE}")
    return key


def triton_tracing(otlp_endpoint: str, rate: int = 0) -> list[str]:
    """tritonserver's options that export its spans (request, model, compute) over OTLP/HTTP to
    the collector at `otlp_endpoint` (http://host:port) as service `triton`. Every request that
    carries a W3C trace context is traced, as a child of the caller's span; `rate` N also
    traces one in N of the others (0: none). But Triton's gRPC frontend (24.10, and its main
    branch) reads the `traceparent` value with strlen past its end: when the heap byte after it
    is not 0 the context is rejected and the request counts as one without a context (not
    traced at rate 0), silently: up to a few requests in a hundred here (see test_traces)."""
    if rate < 0:
        raise ValueError(f"the trace rate is one request in N, N >= 0 (0: none), got {rate}")
    return [
        f"--trace-config={setting}"
        for setting in (
            "mode=opentelemetry",
            f"opentelemetry,url={tracing.traces_url(tracing.check_endpoint(otlp_endpoint))}",
            "opentelemetry,resource=service.name=triton",
            f"rate={rate}",
            "count=-1",
            "level=TIMESTAMPS",
        )
    ]


def _tls_options(tls: Tls | None) -> list[str]:
    """tritonserver's gRPC TLS options for `tls` (none: plaintext)."""
    if tls is None:
        return []
    assert tls.cert is not None and tls.key is not None  # checked by TritonServer
    tls.channel_credentials()  # reads the files and checks the key is the cert's, or TlsError
    options = [
        "--grpc-use-ssl=true",
        f"--grpc-server-cert={Path(tls.cert).resolve()}",
        f"--grpc-server-key={Path(tls.key).resolve()}",
    ]
    if tls.ca is not None:
        options.append(f"--grpc-root-cert={Path(tls.ca).resolve()}")
    if tls.require_client_cert:
        options.append("--grpc-use-ssl-mutual=true")
    return options


def _server_env() -> dict[str, str]:
    """Environment for tritonserver: libpython of this interpreter + the wheel's libraries."""
    env = dict(os.environ)
    libs = [
        sysconfig.get_config_var("LIBDIR"),
        str(wheel_root().parent.parent / "nvidia_pytriton.libs"),
        env.get("LD_LIBRARY_PATH", ""),
    ]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in libs if p)
    # The embedded interpreter of the stub finds its prefix through `python3` on PATH:
    # this interpreter's bin first makes it a venv interpreter (venv numpy<2, openvino).
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env
