"""`edge serve --workers N`: N agent processes on one gRPC port (and one REST port), so that
the Python work of the calls uses every core.

The parent binds the ports first without SO_REUSEPORT (a port another program holds is
PortInUse, as for one process), then holds them with SO_REUSEPORT for its lifetime; its workers
(spawned processes, each with its own model) listen with SO_REUSEPORT and the kernel spreads the
connections among them. Worker 0 starts alone (a mistake in the settings is its one error line,
and it fetches a family from ModelSync once); the others follow. Worker i serves /metrics on
metrics_port + i, keeps its collected examples in its own file and spends 1/N of the escalation
budget. SIGINT or SIGTERM stops every worker gracefully; a worker that stops on its own stops
the others, and the parent exits with its code.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from edgecascade.cloud.common import logs, tracing
from edgecascade.cloud.common.ports import reserve_shared
from edgecascade.cloud.common.serving import run_until_signalled, user_errors
from edgecascade.edge.serving.collection import store_path
from edgecascade.edge.serving.server import Worker, serve
from edgecascade.edge.serving.settings import EdgeSettings

log = logging.getLogger(__name__)
STOP_MARGIN_S = 15.0  # beyond grace_s, for a worker to close its model and stores once stopped
PR_SET_PDEATHSIG = 1


def worker_settings(settings: EdgeSettings, index: int, port: int, http_port: int) -> EdgeSettings:
    """Worker `index`'s settings: the ports its parent holds, its own metrics port and examples
    file, and its share of the escalation budget."""
    count = settings.workers
    store = settings.examples_file or store_path(settings.artifacts, settings.family)
    per_second = settings.escalations_per_second
    burst = settings.escalation_burst
    per_day = settings.escalations_per_day
    changes: dict[str, Any] = {
        "port": port,
        "http_port": http_port,
        "metrics_port": settings.metrics_port + index if settings.metrics_port else 0,
        "examples_file": store.with_name(f"{store.stem}-worker{index}{store.suffix}"),
        "escalations_per_second": per_second / count if per_second else None,
        "escalation_burst": max(1.0, burst / count) if burst else None,
        "escalations_per_day": max(1, per_day // count) if per_day else None,
        "workers": 1,
    }
    return settings.model_copy(update=changes)


def _worker_main(settings: EdgeSettings, index: int, count: int, ready: Connection) -> None:
    """A worker process: the agent, serving until SIGINT or SIGTERM (or its parent's death)."""
    if sys.platform == "linux":  # a parent killed outright takes its workers along
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    logs.configure(settings.log_format, settings.log_level)
    tracing.configure("edgecascade-edge", settings.otlp_endpoint, settings.trace_ratio)
    worker = Worker(index, count, lambda: ready.send(index))
    with user_errors():
        run_until_signalled(lambda stop: serve(settings, stop, worker), settings.event_loop)


class Workers:
    """The worker processes of one `edge serve --workers N`, started and stopped together."""

    def __init__(self, settings: EdgeSettings) -> None:
        self.settings = settings
        self.stop = threading.Event()
        self._context = multiprocessing.get_context("spawn")
        self._ready, self._ready_in = self._context.Pipe(duplex=False)
        self.processes: list[BaseProcess] = []

    def run(self) -> int:
        """Hold the ports, run the workers until a signal (exit code 0) or until one stops on
        its own (its exit code; 1 when it was 0 or a signal); PortInUse when a port is taken."""
        held: list[socket.socket] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stop.set())
        try:
            held.append(reserve_shared(self.settings.host, self.settings.port))
            if self.settings.http_port:
                held.append(reserve_shared(self.settings.host, self.settings.http_port))
            rest = held[1].getsockname()[1] if self.settings.http_port else 0
            ports = (held[0].getsockname()[1], rest)
            self._start(0, ports)
            code = self._until_ready(1)
            if code is None:
                for index in range(1, self.settings.workers):
                    self._start(index, ports)
                code = self._until_ready(self.settings.workers - 1)
            if code is None:
                host = self.settings.host
                log.info("%d workers serving on %s:%d", len(self.processes), host, ports[0])
                code = self._watch()
            return code
        finally:
            self._stop_all()
            for sock in held:
                sock.close()

    def _start(self, index: int, ports: tuple[int, int]) -> None:
        """Worker `index` on the held (gRPC, REST) ports (REST 0: none)."""
        settings = worker_settings(self.settings, index, *ports)
        process = self._context.Process(
            target=_worker_main,
            args=(settings, index, self.settings.workers, self._ready_in),
            name=f"edge-worker-{index}",
        )
        process.start()
        self.processes.append(process)

    def _until_ready(self, count: int) -> int | None:
        """None once `count` more workers serve; else the exit code to leave with."""
        while count:
            if self.stop.is_set():
                return 0
            for item in wait([self._ready, *(p.sentinel for p in self.processes)], timeout=0.2):
                if item is self._ready:
                    self._ready.recv()
                    count -= 1
                else:
                    return self._stopped_alone(item)
        return None

    def _watch(self) -> int:
        while not self.stop.is_set():
            if ended := wait([p.sentinel for p in self.processes], timeout=0.2):
                return self._stopped_alone(ended[0])
        return 0

    def _stopped_alone(self, sentinel: object) -> int:
        """The exit code of the worker of `sentinel`, which stopped without being told to."""
        process = next(p for p in self.processes if p.sentinel == sentinel)
        process.join()  # its sentinel closes a moment before its exit status can be read
        if self.stop.is_set():
            return 0
        code = process.exitcode
        log.error("worker %s exited with code %s: stopping the others", process.name, code)
        return code if code is not None and code > 0 else 1  # killed by a signal (< 0): 1

    def _stop_all(self) -> None:
        """SIGTERM to every worker still running; those not gone after grace_s plus a margin
        are killed."""
        for process in self.processes:
            if process.exitcode is None and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        for process in self.processes:
            process.join(self.settings.grace_s + STOP_MARGIN_S)
            if process.exitcode is None:
                log.warning("worker %s did not stop: killed", process.name)
                process.kill()
                process.join()


def run_workers(settings: EdgeSettings) -> None:
    """`edge serve --workers N` (N > 1): exits with the code of `Workers.run`."""
    code = Workers(settings).run()
    if code:
        raise SystemExit(code)
