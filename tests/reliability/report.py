"""What the reliability suite tried and what came back, written as JSON when
EDGECASCADE_RELIABILITY_REPORT names a file (`make reliability`: reports/reliability.json)."""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import psutil

from edgecascade.edge.tools.process import EdgeProcess

REPORT_VARIABLE = "EDGECASCADE_RELIABILITY_REPORT"


class Report:
    def __init__(self) -> None:
        # API -> input class -> status code name -> count
        self.codes: defaultdict[str, defaultdict[str, Counter[str]]] = defaultdict(
            lambda: defaultdict(Counter)
        )
        self.inputs: Counter[str] = Counter()  # API -> requests sent (stream frames each)
        self.figures: dict[str, Any] = {}
        # (sent, answered) Unix times, API, classes: what was in flight when a bystander waited
        self.timeline: list[tuple[float, float, str, list[str]]] = []

    def add(self, api: str, classes: list[str], code: str, sent: float) -> None:
        """One input's classes and status code; `sent`: when its call began (Unix time)."""
        self.inputs[api] += 1
        for cls in classes:
            self.codes[api][cls][code] += 1
        self.timeline.append((sent, time.time(), api, classes))

    def in_flight(self, start: float, end: float) -> list[str]:
        """The inputs whose calls overlapped [start, end], as `API: class, class`."""
        return [
            f"{api}: {', '.join(classes)}"
            for sent, answered, api, classes in self.timeline
            if sent <= end and answered >= start
        ]

    def as_json(self) -> dict[str, Any]:
        return {
            "inputs": dict(self.inputs),
            "codes_by_class": {
                api: {cls: dict(sorted(c.items())) for cls, c in sorted(classes.items())}
                for api, classes in self.codes.items()
            },
            **self.figures,
        }

    def write(self) -> Path | None:
        target = os.environ.get(REPORT_VARIABLE)
        if not target:
            return None
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_json(), indent=2) + "\n")
        return path


def agent_figures(agent: EdgeProcess) -> dict[str, int]:
    """The agent process's RSS, threads and open file descriptors now."""
    assert agent.pid is not None, "the edge agent is not running"
    process = psutil.Process(agent.pid)
    return {
        "rss_bytes": process.memory_info().rss,
        "threads": process.num_threads(),
        "open_fds": process.num_fds(),
    }
