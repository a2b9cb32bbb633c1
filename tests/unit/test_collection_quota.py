"""The cloud side's quota per edge (cloud/registry/uploads.py): all of an edge's families count,
each edge has its own, and what is kept counts again after a restart of the gateway."""

from __future__ import annotations

import multiprocessing
import sqlite3
from contextlib import closing
from pathlib import Path
from threading import Barrier

import numpy as np
import pytest

from edgecascade.cloud.common.examples import Example
from edgecascade.cloud.registry.examples import received_path
from edgecascade.cloud.registry.uploads import QuotaExceeded, ReceivedExamples
from edgecascade.edge.tools.adapt_examples import collect


def example(i: int, family: str = "fashion") -> Example:
    image = np.random.default_rng(i).integers(0, 256, (8, 8, 1), np.uint8)
    probabilities = np.full(4, 0.25, np.float32)
    return Example.of(family, f"{family}_edge:1", "audit", image, probabilities, probabilities)


def test_the_quota_counts_every_family_of_an_edge_and_survives_a_restart(tmp_path: Path) -> None:
    one = example(0).nbytes
    received = ReceivedExamples(tmp_path, quota_bytes=4 * one)
    assert received.keep("cam-1", example(0)) and received.keep("cam-1", example(1, "other"))
    assert not received.keep("cam-1", example(0))  # a duplicate takes nothing more
    assert received.keep("cam-1", example(2)) and received.used_bytes("cam-1") == 3 * one
    received.close()

    restarted = ReceivedExamples(tmp_path, quota_bytes=4 * one)
    assert restarted.used_bytes("cam-1") == 3 * one
    assert restarted.keep("cam-1", example(3, "other"))
    with pytest.raises(QuotaExceeded, match=f"edge 'cam-1' has {4 * one} bytes"):
        restarted.keep("cam-1", example(4))
    assert restarted.keep("cam-2", example(4))  # another edge, its own quota
    restarted.close()


def test_an_edge_id_that_is_not_a_safe_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="edge id"):
        ReceivedExamples(tmp_path).keep("../cam", example(0))


def test_a_duplicate_at_a_full_quota_is_acknowledged_and_costs_nothing(tmp_path: Path) -> None:
    one = example(0).nbytes
    received = ReceivedExamples(tmp_path, quota_bytes=2 * one)
    assert received.keep("cam-1", example(0)) and received.keep("cam-1", example(1))
    assert not received.keep("cam-1", example(1))  # full, yet the resend is no error
    assert received.used_bytes("cam-1") == 2 * one
    with pytest.raises(QuotaExceeded):
        received.keep("cam-1", example(2))
    received.close()


def test_gateways_sharing_a_registry_count_the_same_quota(tmp_path: Path) -> None:
    one = example(0).nbytes
    first, second = (ReceivedExamples(tmp_path, quota_bytes=3 * one) for _ in range(2))
    assert first.keep("cam-1", example(0)) and second.keep("cam-1", example(1, "other"))
    assert first.used_bytes("cam-1") == second.used_bytes("cam-1") == 2 * one
    assert not second.keep("cam-1", example(0))  # the other gateway's example is a duplicate
    assert first.keep("cam-1", example(2))
    with pytest.raises(QuotaExceeded, match=f"has {3 * one} bytes"):
        second.keep("cam-1", example(3, "other"))
    first.close()
    second.close()


def _keep_all(registry: Path, quota_bytes: int, seeds: range, start: Barrier) -> int:
    received = ReceivedExamples(registry, quota_bytes)
    start.wait()
    kept = 0
    for seed in seeds:
        try:
            kept += received.keep("cam-1", example(seed, "fashion" if seed % 2 else "other"))
        except QuotaExceeded:
            pass
    received.close()
    return kept


def test_gateway_processes_uploading_at_once_never_pass_the_quota(tmp_path: Path) -> None:
    one, limit = example(0).nbytes, 40
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(3) as pool:
        start = manager.Barrier(3)  # all three write at once, whatever their start-up times
        kept = pool.starmap(
            _keep_all, [(tmp_path, limit * one, range(i, 300, 3), start) for i in range(3)]
        )
    assert sum(kept) == limit and all(kept)
    assert ReceivedExamples(tmp_path).used_bytes("cam-1") == limit * one


def test_the_cloud_side_stores_need_only_file_locks(tmp_path: Path) -> None:
    """The registry is a volume that gateways on several hosts open: a write-ahead log's
    shared-memory index would not be seen across hosts, a rollback journal only needs locks."""
    received = ReceivedExamples(tmp_path)
    assert received.keep("cam-1", example(0))
    path = received_path(tmp_path, "fashion", "cam-1")
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert not path.with_name(path.name + "-wal").exists()
    # models adapt reads the store while a gateway holds it, and leaves its journal as it is
    assert collect([path], "fashion").images.shape == (1, 8, 8, 1)
    assert received.keep("cam-1", example(1))
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    received.close()
