"""Background threads (fold compiles, large images) run below the requests' priority."""

import os
import threading

from edgecascade.cloud.common.background import NICE, background_pool


def niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_a_background_pools_threads_run_at_a_lower_priority() -> None:
    with background_pool(1, "test-background") as pool:
        name, nice = pool.submit(lambda: (threading.current_thread().name, niceness())).result()
    assert name.startswith("test-background") and nice == NICE
    assert niceness() < nice  # the caller's thread keeps its own
