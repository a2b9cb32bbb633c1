"""Run the tritonserver binary shipped in the nvidia-pytriton wheel on a model repository.

The wheel's server needs a backend folder assembled next to it (the python backend plus the
stub built for this Python), LD_LIBRARY_PATH with this interpreter's LIBDIR (the stub links
libpython) and the wheel's bundled libraries, and this interpreter first on PATH: the stub's
embedded Python takes its prefix from `python3` on PATH, so without it model.py would get the
base interpreter's packages (a numpy 2 there silently returns empty outputs).
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import tritonclient.grpc as grpcclient

from edgecascade.cloud.common.launcher import die_with_parent
from edgecascade.cloud.common.ports import free_port
from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.cloud.triton.control import ModelControl

HOST = "127.0.0.1"


def wheel_root() -> Path:
    """The ``pytriton/tritonserver`` folder of the installed wheel."""
    import pytriton

    return Path(pytriton.__file__).parent / "tritonserver"


class TritonServerError(RuntimeError):
    """The server died or did not become ready; the message ends with its log tail."""


class TritonServer:
    """A local tritonserver process on loopback ports; use as a context manager.

    `model_control_mode="explicit"` loads only `load_models` at start; the others are loaded
    and unloaded with `load_model` / `unload_model` (see `edgecascade.cloud.registry.rollout`).
    """

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
    ) -> None:
        if load_models and model_control_mode != "explicit":
            raise ValueError("load_models needs model_control_mode='explicit'")
        self.repository = Path(repository).resolve()
        self.model_control_mode = model_control_mode
        self.load_models = tuple(load_models)
        self.grpc_port = grpc_port or free_port()
        self.http_port = http_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self._runtime = Path(tempfile.mkdtemp(prefix="edgecascade-triton-"))
        self._log_path = (
            Path(log_path).resolve() if log_path else self._runtime / "tritonserver.log"
        )
        self._log_verbose = log_verbose
        self._process: subprocess.Popen[bytes] | None = None

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
    def log_path(self) -> Path:
        return self._log_path

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def control(self) -> ModelControl:
        return ModelControl(self.grpc_url)

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def load_model(self, name: str) -> None:
        """(Re)load `name` with the versions its config lists (explicit mode)."""
        self.control.load(name)

    def unload_model(self, name: str) -> None:
        """Unload every version of `name` (explicit mode)."""
        self.control.unload(name)

    def start(self, timeout: float = 120.0) -> Self:
        """Launch the server and wait until it and every model it loads are ready."""
        if self.is_running():
            raise TritonServerError(f"tritonserver already running (pid {self.pid})")
        backends = self._prepare_backends()
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [
            str(wheel_root() / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
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
            f"--log-verbose={self._log_verbose}",
            f"--model-control-mode={self.model_control_mode}",
            *(f"--load-model={name}" for name in self.load_models),
        ]
        with open(self._log_path, "ab") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_server_env(),
                cwd=self._runtime,
                start_new_session=True,  # own process group: Ctrl-C reaches us, we stop it
                preexec_fn=die_with_parent,  # noqa: PLW1509 - only a prctl call
            )
        atexit.register(self.stop)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL to the whole process group after `grace` seconds; idempotent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # python backend stubs too
                process.wait()
        atexit.unregister(self.stop)
        keep_log = self._log_path.parent == self._runtime
        shutil.rmtree(self._runtime / "backends" if keep_log else self._runtime, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> Self:
        return self if self.is_running() else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _prepare_backends(self) -> Path:
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
        return backends

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with PLAINTEXT.triton(self.grpc_url) as client:
            while True:
                assert self._process is not None
                if self._process.poll() is not None:
                    raise TritonServerError(
                        f"tritonserver exited with code {self._process.returncode} "
                        f"(log {self._log_path}):\n{self.log_tail()}"
                    )
                if self._all_ready(client):
                    return
                if time.monotonic() > deadline:
                    raise TritonServerError(
                        f"tritonserver not ready after {timeout:.0f}s "
                        f"(log {self._log_path}):\n{self.log_tail()}"
                    )
                time.sleep(0.1)

    def _all_ready(self, client: grpcclient.InferenceServerClient) -> bool:
        try:
            if not client.is_server_ready():
                return False
            index = client.get_model_repository_index().models
            if self.model_control_mode == "explicit":
                return all(client.is_model_ready(name) for name in self.load_models)
            return all(client.is_model_ready(m.name, m.version) for m in index)
        except grpcclient.InferenceServerException:
            return False


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
