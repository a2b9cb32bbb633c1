"""Collection at the edge: every input the cloud answered (escalated or audited) is kept with
both tiers' probabilities in a bounded, crash-safe ExampleStore, written by a thread of its own
so the request path only queues (a full queue drops, counted); `collect = false` keeps nothing."""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any, Literal

from numpy.typing import NDArray

from edgecascade.cloud.common.examples import Example, ExampleStore
from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.preprocessing import Image, prepare_batch

log = logging.getLogger(__name__)
Batch = tuple[str, Manifest, list[Image], NDArray[Any], NDArray[Any], float]


def store_path(artifacts: Path, family: str) -> Path:
    """Where an agent keeps its family's collected examples."""
    return artifacts / "edge-examples" / f"{family}.sqlite"


class Collector:
    """Keeps what `collect` is given in `store` (an ExampleSink for the cascade)."""

    def __init__(self, store: ExampleStore, max_queued: int = 1024) -> None:
        self.store = store
        self.kept = self.duplicates = self.dropped = 0
        self._queue: queue.Queue[Batch | None] = queue.Queue(max_queued)
        self._thread = threading.Thread(target=self._write, name="example-store", daemon=True)
        self._thread.start()

    def collect(
        self,
        kind: Literal["escalated", "audit"],
        pair: Manifest,
        images: list[Image],
        edge_probabilities: NDArray[Any],
        cloud_probabilities: NDArray[Any],
    ) -> None:
        """Queue the batch for the store; never blocks (a full queue drops it)."""
        try:
            self._queue.put_nowait(
                (kind, pair, images, edge_probabilities, cloud_probabilities, time.time())
            )
        except queue.Full:
            self.dropped += len(images)

    def _write(self) -> None:
        while (batch := self._queue.get()) is not None:
            kind, pair, images, edge, cloud, seen_at = batch
            try:
                prepared = prepare_batch(images, pair.edge.preprocessing)
                for image, e, c in zip(prepared, edge, cloud):
                    example = Example.of(
                        pair.family, pair.edge.key, kind, image, c, e, seen_at=seen_at
                    )
                    if self.store.add(example):
                        self.kept += 1
                    else:
                        self.duplicates += 1
            except Exception:  # a store that cannot write must not stop the agent
                self.dropped += len(images)
                log.exception("collected examples not kept")
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def flush(self) -> None:
        """Wait until everything queued so far is in the store."""
        self._queue.join()

    def close(self) -> None:
        """Write what is queued, then close the store."""
        self._queue.put(None)
        self._thread.join()
        self.store.close()
