"""A server of this project run as a child process, for the demo, benchmarks and tests."""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)  # loaded here: no dlopen in the forked child


def edgecascade_command(*args: str) -> list[str]:
    """argv that runs the `edgecascade` CLI with this interpreter (`python -m edgecascade`)."""
    return [sys.executable, "-m", "edgecascade", *args]


def die_with_parent() -> None:
    """`preexec_fn` for a child: it gets SIGKILL when the thread that started it exits."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ServiceProcess:
    """Starts `args`, logging to `log_path`, and waits until `ready()` is true; stops with
    SIGTERM, then SIGKILL. `ready` may raise while the server is coming up."""

    name = "service"

    def __init__(self, args: Sequence[str], log_path: Path):
        self.args = list(args)
        self.log_path = log_path
        self._process: subprocess.Popen | None = None

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout_s: float = 60.0) -> ServiceProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited ({self._process.returncode}):\n{self.log_tail()}"
                )
            try:
                if self.ready():
                    return self
            except Exception:  # noqa: BLE001 - not up yet
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"{self.name} not ready in {timeout_s:.0f}s:\n{self.log_tail()}")
            time.sleep(0.1)

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def stop(self, grace_s: float = 10.0) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(grace_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll `condition` until it holds or `timeout_s` passes; whether it held."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval_s)
    return True
