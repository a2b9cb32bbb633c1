"""The cloud side of example uploads: each edge's examples kept per family
(cloud/registry/examples.py's stores), deduped by sha256, within a quota of bytes per edge."""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgecascade.cloud.common.examples import Example, ExampleStore
from edgecascade.cloud.registry.examples import (
    EXAMPLES,
    SUFFIX,
    checked_name,
    open_received,
    received_path,
)

DEFAULT_QUOTA_BYTES = 1 << 30


class QuotaExceeded(Exception):
    """The edge's examples would exceed its quota."""


class ReceivedExamples:
    """Keeps uploads under `registry_dir`; at most `quota_bytes` of examples per edge, all its
    families together, counted from what the stores on disk hold at each upload, so that every
    gateway sharing the registry enforces the same quota (an edge's check and write are taken in
    turns across processes, under a lock file). A duplicate costs nothing, even at a full quota."""

    def __init__(self, registry_dir: Path, quota_bytes: int = DEFAULT_QUOTA_BYTES) -> None:
        self.registry_dir = Path(registry_dir)
        self.quota_bytes = quota_bytes
        self._stores: dict[Path, ExampleStore] = {}
        self._lock = threading.Lock()

    def keep(self, edge_id: str, example: Example) -> bool:
        """Keep `example` from `edge_id`: False when its sha256 is already kept there;
        QuotaExceeded when it does not fit the quota, ValueError for a bad name."""
        path = received_path(self.registry_dir, example.family, edge_id)
        with self._lock, self._edge_turn(edge_id):
            store = self._store(path)
            if example.sha256 in store:
                return False
            used = self._used(edge_id)
            if used + example.nbytes > self.quota_bytes:
                raise QuotaExceeded(
                    f"edge {edge_id!r} has {used} bytes of examples kept, its quota is "
                    f"{self.quota_bytes}: the cloud side keeps no more from it until examples "
                    "are removed or the gateway's --examples-quota-bytes is raised"
                )
            return store.add(example)

    def used_bytes(self, edge_id: str) -> int:
        """Bytes of `edge_id`'s examples kept, in all families, as the stores hold them now."""
        checked_name("edge id", edge_id)
        with self._lock:
            return self._used(edge_id)

    def _used(self, edge_id: str) -> int:
        stores = (self.registry_dir / EXAMPLES).glob(f"*/{edge_id}{SUFFIX}")
        return sum(self._store(path).size_bytes() for path in stores)

    def _store(self, path: Path) -> ExampleStore:
        if path not in self._stores:
            self._stores[path] = open_received(path, self.quota_bytes)
        return self._stores[path]

    @contextmanager
    def _edge_turn(self, edge_id: str) -> Iterator[None]:
        """Held by one process at a time per edge (families' folders cannot start with '.')."""
        folder = self.registry_dir / EXAMPLES
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / f".{edge_id}.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield  # closing the file releases the lock

    def close(self) -> None:
        with self._lock:
            for store in self._stores.values():
                store.close()
            self._stores.clear()
