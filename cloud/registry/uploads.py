"""The cloud side of example uploads: each edge's examples kept per family
(cloud/registry/examples.py's stores), deduped by sha256, within a quota of bytes per edge."""

from __future__ import annotations

import threading
from pathlib import Path

from edgecascade.cloud.common.examples import Example, ExampleStore
from edgecascade.cloud.registry.examples import EXAMPLES, SUFFIX, checked_name, received_store

DEFAULT_QUOTA_BYTES = 1 << 30


class QuotaExceeded(Exception):
    """The edge's examples would exceed its quota."""


class ReceivedExamples:
    """Keeps uploads under `registry_dir`; at most `quota_bytes` of examples per edge, all its
    families together (what the stores hold, counted when the edge is first seen)."""

    def __init__(self, registry_dir: Path, quota_bytes: int = DEFAULT_QUOTA_BYTES) -> None:
        self.registry_dir = Path(registry_dir)
        self.quota_bytes = quota_bytes
        self._stores: dict[tuple[str, str], ExampleStore] = {}
        self._used: dict[str, int] = {}
        self._lock = threading.Lock()

    def keep(self, edge_id: str, example: Example) -> bool:
        """Keep `example` from `edge_id`: False when its sha256 is already kept there;
        QuotaExceeded when it does not fit the quota, ValueError for a bad name."""
        checked_name("edge id", edge_id)
        with self._lock:
            used = self.used_bytes(edge_id)
            if used + example.nbytes > self.quota_bytes:
                raise QuotaExceeded(
                    f"edge {edge_id!r} has {used} bytes of examples kept, its quota is "
                    f"{self.quota_bytes}: the cloud side keeps no more from it until examples "
                    "are removed or the gateway's --examples-quota-bytes is raised"
                )
            key = (example.family, edge_id)
            if key not in self._stores:
                self._stores[key] = received_store(
                    self.registry_dir, example.family, edge_id, self.quota_bytes
                )
            added = self._stores[key].add(example)
            self._used[edge_id] = used + example.nbytes * added
            return added

    def used_bytes(self, edge_id: str) -> int:
        """Bytes of `edge_id`'s examples kept, in all families."""
        if edge_id not in self._used:
            total = 0
            for path in (self.registry_dir / EXAMPLES).glob(f"*/{edge_id}{SUFFIX}"):
                key = (path.parent.name, edge_id)
                if key not in self._stores:
                    self._stores[key] = ExampleStore(path, self.quota_bytes)
                total += self._stores[key].size_bytes()
            self._used[edge_id] = total
        return self._used[edge_id]

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
