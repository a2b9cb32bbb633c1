"""Threads for work that must not slow down the requests being answered: they run at a lower
priority, so that on busy cores a request's own threads go first."""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)
NICE = 10  # the threads' niceness (Linux: niceness is per thread; requests' threads: 0)


def lower_priority() -> None:
    """The calling thread runs at niceness NICE (where the system allows)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
    except OSError as e:  # not allowed here: the usual priority
        log.debug("background threads keep their priority: %s", e)


def background_pool(workers: int, name: str) -> ThreadPoolExecutor:
    """A pool of `workers` threads named `name`-N, each at a lower priority."""
    return ThreadPoolExecutor(workers, thread_name_prefix=name, initializer=lower_priority)
