"""The child-process launcher with real child processes (small Python scripts)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from edgecascade.cloud.common.launcher import ChildFailed, ChildProcess, wait_until

pytestmark = pytest.mark.integration  # real child processes


class Script(ChildProcess):
    """`code` run by this interpreter, ready once it has written "ready" to its log."""

    def __init__(
        self,
        code: str,
        log_path: Path,
        stop_signal: signal.Signals = signal.SIGTERM,
        grace_s: float = 10.0,
    ) -> None:
        argv = [sys.executable, "-c", textwrap.dedent(code)]
        super().__init__(argv, log_path, stop_signal=stop_signal, grace_s=grace_s)

    def ready(self) -> bool:
        return "ready" in self.log_tail()


def gone(pid: int) -> bool:
    """Whether `pid` has exited (a zombie waiting for its new parent to reap it counts)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


SLEEPER = """
    import time
    print("ready", flush=True)
    time.sleep(60)
"""


def test_a_child_runs_in_a_process_group_of_its_own(tmp_path: Path) -> None:
    with Script(SLEEPER, tmp_path / "child.log") as child:
        assert child.pid is not None
        assert os.getpgid(child.pid) == child.pid != os.getpgid(0)
        assert os.getsid(child.pid) == child.pid  # a session too: no terminal signals
    assert not child.is_running() and child.returncode == -signal.SIGTERM


def test_stop_kills_the_grandchildren_too(tmp_path: Path) -> None:
    code = """
        import subprocess, sys, time
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print("grandchild", grandchild.pid, "ready", flush=True)
        time.sleep(60)
    """
    child = Script(code, tmp_path / "child.log").start()
    grandchild = int(child.log_tail().split()[1])
    assert not gone(grandchild)
    child.stop()
    assert wait_until(lambda: gone(grandchild), 5)


def test_a_child_that_ignores_the_polite_signal_is_killed_after_the_grace(tmp_path: Path) -> None:
    code = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(60)
    """
    child = Script(code, tmp_path / "child.log", grace_s=0.5).start()
    started = time.monotonic()
    child.stop()
    assert 0.5 <= time.monotonic() - started < 5
    assert child.returncode == -signal.SIGKILL


def test_the_polite_signal_is_configurable(tmp_path: Path) -> None:
    code = """
        import signal, sys, time
        signal.signal(signal.SIGUSR1, lambda *_: sys.exit(0))
        print("ready", flush=True)
        time.sleep(60)
    """
    child = Script(code, tmp_path / "child.log", stop_signal=signal.SIGUSR1).start()
    child.stop()
    assert child.returncode == 0


def test_the_log_file_gets_the_childs_output(tmp_path: Path) -> None:
    code = """
        import sys, time
        print("to stdout", flush=True)
        print("to stderr", file=sys.stderr, flush=True)
        print("ready", flush=True)
        time.sleep(60)
    """
    child = Script(code, tmp_path / "logs" / "child.log").start()
    child.stop()
    text = (tmp_path / "logs" / "child.log").read_text()
    assert "to stdout" in text and "to stderr" in text


def test_a_child_that_exits_before_it_is_ready_raises_with_its_log_tail(tmp_path: Path) -> None:
    child = Script("import sys; print('no such model'); sys.exit(3)", tmp_path / "child.log")
    with pytest.raises(ChildFailed, match=r"exited with status 3(.|\n)*no such model"):
        child.start(timeout_s=30)
    assert not child.is_running()


def test_a_child_that_is_never_ready_is_stopped_after_the_timeout(tmp_path: Path) -> None:
    child = Script("import time; print('loading', flush=True); time.sleep(60)", tmp_path / "c.log")
    with pytest.raises(ChildFailed, match=r"not ready after 1s(.|\n)*loading"):
        child.start(timeout_s=1)
    assert child.returncode == -signal.SIGTERM


def test_exited_awaits_the_child_without_blocking_the_loop(tmp_path: Path) -> None:
    child = Script("import time; print('ready', flush=True); time.sleep(0.5)", tmp_path / "c.log")
    child.start()

    async def main() -> tuple[int, int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.ensure_future(tick())
        status = await child.exited()
        ticker.cancel()
        return status, ticks

    status, ticks = asyncio.run(main())
    assert status == 0 and ticks > 10


def test_a_child_dies_when_its_parent_is_killed(tmp_path: Path) -> None:
    parent_code = """
        import sys, time
        from edgecascade.cloud.common.launcher import ChildProcess
        child = ChildProcess([sys.executable, "-c", "import time; time.sleep(60)"], None).start()
        print(child.pid, flush=True)
        time.sleep(60)
    """
    parent = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(parent_code)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert not gone(child)
        parent.kill()
        parent.wait()
        assert wait_until(lambda: gone(child), 5)
    finally:
        parent.kill()
        parent.wait()
