"""The one way this project starts a child process (Triton, HAProxy, an edge agent, a gateway).

A child runs in a process group of its own (Ctrl-C in a terminal reaches only us; we stop it),
gets SIGKILL when the thread that started it exits (PR_SET_PDEATHSIG), writes its output to a
log file (or, without one, to our own stdout and stderr), and counts as started once its ready
check holds. `stop` sends a polite signal (SIGTERM, or what the child prefers) and, after a
grace period, SIGKILL to the whole group, so that grandchildren (Triton's python backend stubs)
go too. Children of this project are started through the `edgecascade` entry point.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

POLL_S = 0.1  # how often a starting child's ready check runs
# The child asks for SIGKILL when its parent goes (PR_SET_PDEATHSIG = 1; it survives the exec),
# leaves if the parent is gone already, then becomes the program. Not a preexec_fn: with one,
# subprocess runs the at-fork handlers, and gRPC's hung an edge agent's start after gRPC calls.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None).prctl(1, signal.SIGKILL)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(f'{sys.argv[2]}: parent {sys.argv[1]} exited before the child started')\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def edgecascade_command(*args: str) -> list[str]:
    """argv that runs the `edgecascade` CLI with this interpreter (`python -m edgecascade`)."""
    return [sys.executable, "-m", "edgecascade", *args]


def dying_with_parent(args: Sequence[str]) -> list[str]:
    """argv that runs `args` so that it gets SIGKILL when the thread that started it exits."""
    return [sys.executable, "-I", "-S", "-c", _DIE_WITH_PARENT, str(os.getpid()), *args]


class ChildFailed(RuntimeError):
    """A child exited or did not become ready while starting; the message ends with its log
    tail."""


class ChildProcess:
    """`args` as a child process; override `ready` (it may raise while the child comes up).

    `log_path` None: the child writes to our stdout and stderr. `stop_signal` asks the child to
    stop; `grace_s` is how long it gets before the group is killed.
    """

    name = "child"

    def __init__(
        self,
        args: Sequence[str],
        log_path: Path | None,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
        grace_s: float = 10.0,
    ) -> None:
        self.args = list(args)
        self.log_path = log_path
        self.env = None if env is None else dict(env)
        self.cwd = cwd
        self.stop_signal = stop_signal
        self.grace_s = grace_s
        self._process: subprocess.Popen[bytes] | None = None
        self._stopped_with: int | None = None  # the exit status of a child that was stopped

    def ready(self) -> bool:
        """Whether the child serves; the default: it is running."""
        return True

    @property
    def pid(self) -> int | None:
        """The child's pid (and process group id) while it runs."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def returncode(self) -> int | None:
        """The child's exit status once it has exited (-N: killed by signal N)."""
        return self._stopped_with if self._process is None else self._process.poll()

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def launch(self) -> None:
        """Start the child without waiting for it to be ready; call from the thread the child
        should live as long as (see `dying_with_parent`)."""
        if self.is_running():
            raise ChildFailed(f"{self.name} already running (pid {self.pid})")
        log: IO[bytes] | None = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            log = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it, we close ours
        try:
            self._process = subprocess.Popen(
                dying_with_parent(self.args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=None if log is None else subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        finally:
            if log is not None:
                log.close()
        atexit.register(self.stop)

    def wait_ready(self, timeout_s: float) -> None:
        """Poll `ready` until it holds; ChildFailed (and the child stopped) when the child exits
        or `timeout_s` passes first."""
        deadline = time.monotonic() + timeout_s
        while True:
            code = self.returncode
            if code is not None:
                self.stop()
                raise ChildFailed(f"{self.name} exited with status {code}{self._tail()}")
            try:
                if self.ready():
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ChildFailed(f"{self.name} not ready after {timeout_s:g}s{self._tail()}")
            time.sleep(POLL_S)

    def start(self, timeout_s: float = 60.0) -> Self:
        """Launch the child and wait until it is ready."""
        self.launch()
        self.wait_ready(timeout_s)
        return self

    def wait(self, timeout_s: float | None = None) -> int:
        """Wait for the child to exit (subprocess.TimeoutExpired after `timeout_s`); its status."""
        process = self._process
        if process is None:
            if self._stopped_with is None:
                raise ChildFailed(f"{self.name} was never started")
            return self._stopped_with
        return process.wait(timeout_s)

    async def exited(self) -> int:
        """Wait, without blocking the event loop, for the child to exit; its status."""
        return await asyncio.to_thread(self.wait)

    def stop(self, grace_s: float | None = None) -> None:
        """`stop_signal` to the child, then SIGKILL to its whole group after `grace_s` (default:
        the child's `grace_s`); idempotent."""
        atexit.unregister(self.stop)
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(self.stop_signal)
            try:
                process.wait(self.grace_s if grace_s is None else grace_s)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(process.pid, signal.SIGKILL)  # what is left of the group
        except ProcessLookupError:
            pass  # the group is gone already
        self._stopped_with = process.wait()

    async def stop_async(self, grace_s: float | None = None) -> None:
        """`stop` without blocking the event loop."""
        await asyncio.to_thread(self.stop, grace_s)

    def log_tail(self, lines: int = 40) -> str:
        """The last `lines` lines of the log ("" without a log file)."""
        if self.log_path is None:
            return ""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _tail(self) -> str:
        return "" if self.log_path is None else f" (log {self.log_path}):\n{self.log_tail()}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def wait_until(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll `condition` until it holds or `timeout_s` passes; whether it held."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval_s)
    return True
