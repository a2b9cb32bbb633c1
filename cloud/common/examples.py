"""A bounded, crash-safe store of examples: inputs the cloud answered, with both tiers'
probabilities, kept at the edge until uploaded and on the cloud side for `models adapt`.

One SQLite file (synchronous=FULL: a committed example survives a crash or a kill -9), with a
write-ahead log on a local disk, or a rollback journal on a volume that several hosts open (the
cloud side's registry): the log's shared-memory index works within one host only.
Each example is one row; its id only grows, so `after(cursor)` resumes an upload where it
stopped even after older rows were dropped. Beyond `max_bytes` of examples (image and
probability bytes) the oldest are dropped first.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

KINDS = ("escalated", "audit")
PAGE = 256  # rows read at a time by `examples`

SCHEMA = """
CREATE TABLE IF NOT EXISTS examples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sha256 TEXT NOT NULL UNIQUE,
    family TEXT NOT NULL,
    edge_version TEXT NOT NULL,
    kind TEXT NOT NULL,
    image_shape TEXT NOT NULL,
    image BLOB NOT NULL,
    cloud_probabilities BLOB NOT NULL,
    edge_probabilities BLOB NOT NULL,
    seen_at REAL NOT NULL,
    bytes INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS examples_family ON examples (family, id);
CREATE TABLE IF NOT EXISTS totals (one INTEGER PRIMARY KEY CHECK (one = 1), bytes INTEGER NOT NULL);
INSERT OR IGNORE INTO totals VALUES (1, 0);
CREATE TRIGGER IF NOT EXISTS examples_added AFTER INSERT ON examples
    BEGIN UPDATE totals SET bytes = bytes + new.bytes; END;
CREATE TRIGGER IF NOT EXISTS examples_dropped AFTER DELETE ON examples
    BEGIN UPDATE totals SET bytes = bytes - old.bytes; END;
"""
COLUMNS = (
    "id, sha256, family, edge_version, kind, image_shape, image, cloud_probabilities,"
    " edge_probabilities, seen_at"
)


def image_sha256(image: NDArray[np.uint8]) -> str:
    """The example key: hex sha256 of the image's raw bytes."""
    return hashlib.sha256(image.tobytes()).hexdigest()


@dataclass(frozen=True)
class Example:
    """One input the cloud answered. Arrays read back from a store are read-only."""

    sha256: str  # hex sha256 of image.tobytes()
    family: str
    edge_version: str  # the edge model key that was serving
    kind: str  # "escalated" | "audit"
    image: NDArray[np.uint8]  # the prepared edge input [H, W, C], as the edge model takes it
    cloud_probabilities: NDArray[np.float32]  # [classes]
    edge_probabilities: NDArray[np.float32]  # [classes]
    seen_at: float  # unix seconds

    @classmethod
    def of(
        cls,
        family: str,
        edge_version: str,
        kind: str,
        image: NDArray[np.uint8],
        cloud_probabilities: NDArray[np.float32],
        edge_probabilities: NDArray[np.float32],
        seen_at: float | None = None,
    ) -> Example:
        """An example keyed by its image's sha256, seen now unless `seen_at` is given."""
        return cls(
            image_sha256(image),
            family,
            edge_version,
            kind,
            image,
            np.asarray(cloud_probabilities, np.float32),
            np.asarray(edge_probabilities, np.float32),
            time.time() if seen_at is None else seen_at,
        )

    @property
    def nbytes(self) -> int:
        """What the example weighs in a store: its image and both probability vectors."""
        return self.image.nbytes + 4 * (
            self.cloud_probabilities.size + self.edge_probabilities.size
        )

    def check(self) -> None:
        """Raise ValueError naming the first field that is malformed."""
        if self.kind not in KINDS:
            raise ValueError(f"kind {self.kind!r}: expected one of {', '.join(KINDS)}")
        if self.image.dtype != np.uint8 or self.image.ndim != 3 or not self.image.size:
            raise ValueError(
                f"image: expected uint8 [H, W, C], got {self.image.dtype} {self.image.shape}"
            )
        classes = self.cloud_probabilities.shape
        if len(classes) != 1 or not classes[0] or self.edge_probabilities.shape != classes:
            raise ValueError(
                f"probabilities: expected two equal [classes] vectors, got cloud {classes}"
                f" and edge {self.edge_probabilities.shape}"
            )
        if self.sha256 != image_sha256(self.image):
            raise ValueError("sha256: not the hex sha256 of the image's bytes")


class ExampleStore:
    """Examples in one SQLite file, at most `max_bytes` of them; safe to share between threads."""

    def __init__(self, path: Path, max_bytes: int, *, shared_volume: bool = False) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes {max_bytes}: expected a positive number of bytes")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout=10000")
        journal = "delete" if shared_volume else "wal"
        mode = self._db.execute(f"PRAGMA journal_mode={journal}").fetchone()[0]
        if mode != journal:
            raise OSError(
                f"{self.path}: SQLite cannot use journal mode {journal} here ({mode}); is another"
                " process holding the file?"
            )
        self._db.execute("PRAGMA synchronous=FULL")
        # One write transaction taken at once: statement by statement, a reader opening the
        # store while a writer commits could fail "database is locked" without waiting.
        self._db.executescript(f"BEGIN IMMEDIATE; {SCHEMA} COMMIT;")

    def add(self, example: Example) -> bool:
        """Keep `example`; False if its sha256 is already kept. The oldest examples are dropped
        while the store holds more than `max_bytes`. ValueError for a malformed example or one
        larger than the whole store."""
        example.check()
        size = example.nbytes
        if size > self.max_bytes:
            raise ValueError(f"example of {size} bytes exceeds the store's {self.max_bytes}")
        row = (
            example.sha256,
            example.family,
            example.edge_version,
            example.kind,
            json.dumps(list(example.image.shape)),
            example.image.tobytes(),
            example.cloud_probabilities.astype("<f4").tobytes(),
            example.edge_probabilities.astype("<f4").tobytes(),
            float(example.seen_at),
            size,
        )
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO examples (sha256, family, edge_version, kind,"
                    " image_shape, image, cloud_probabilities, edge_probabilities, seen_at, bytes)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
                added = cursor.rowcount == 1
                if added:
                    self._drop_oldest(keep=cursor.lastrowid)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return added

    def _drop_oldest(self, keep: int | None) -> None:
        """Drop the oldest rows but `keep` until the store fits in `max_bytes`."""
        excess = self._total() - self.max_bytes
        if excess <= 0:
            return
        last = self._db.execute(
            "SELECT id FROM (SELECT id, SUM(bytes) OVER (ORDER BY id) AS dropped FROM examples"
            " WHERE id != ?) WHERE dropped >= ? ORDER BY id LIMIT 1",
            (keep, excess),
        ).fetchone()
        self._db.execute("DELETE FROM examples WHERE id <= ? AND id != ?", (last[0], keep))

    def __contains__(self, sha256: object) -> bool:
        """Whether an example with this hex sha256 is kept."""
        with self._lock:
            row = self._db.execute("SELECT 1 FROM examples WHERE sha256 = ?", (sha256,))
            return row.fetchone() is not None

    def after(self, cursor: int, limit: int) -> list[tuple[int, Example]]:
        """Up to `limit` examples kept after id `cursor` (0: from the start), oldest first, each
        with its id: the next call's cursor is the last id returned."""
        return self._select("id > ?", (cursor,), limit)

    def examples(self, family: str | None = None) -> Iterator[Example]:
        """Every example kept (of `family`, if given), oldest first, read a page at a time."""
        cursor = 0
        while True:
            if family is None:
                page = self._select("id > ?", (cursor,), PAGE)
            else:
                page = self._select("id > ? AND family = ?", (cursor, family), PAGE)
            if not page:
                return
            yield from (example for _, example in page)
            cursor = page[-1][0]

    def _select(
        self, where: str, args: tuple[object, ...], limit: int
    ) -> list[tuple[int, Example]]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {COLUMNS} FROM examples WHERE {where} ORDER BY id LIMIT ?",
                (*args, limit),
            ).fetchall()
        return [(row[0], _example(row[1:])) for row in rows]

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM examples").fetchone()[0])

    def size_bytes(self) -> int:
        """Bytes of the examples kept (images and probabilities), what `max_bytes` caps."""
        with self._lock:
            return self._total()

    def _total(self) -> int:
        return int(self._db.execute("SELECT bytes FROM totals").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ExampleStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _example(row: tuple[object, ...]) -> Example:
    sha256, family, edge_version, kind, shape, image, cloud, edge, seen_at = row
    assert isinstance(shape, str) and isinstance(image, bytes)
    assert isinstance(cloud, bytes) and isinstance(edge, bytes) and isinstance(seen_at, float)
    return Example(
        str(sha256),
        str(family),
        str(edge_version),
        str(kind),
        np.frombuffer(image, np.uint8).reshape(json.loads(shape)),
        np.frombuffer(cloud, "<f4").astype(np.float32, copy=False),
        np.frombuffer(edge, "<f4").astype(np.float32, copy=False),
        seen_at,
    )
