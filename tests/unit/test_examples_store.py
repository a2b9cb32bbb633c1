import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgecascade.cloud.common.errors import InvalidInput
from edgecascade.cloud.common.examples import Example, ExampleStore
from edgecascade.cloud.registry.examples import received_files, received_path
from edgecascade.cloud.registry.uploads import ReceivedExamples

CLASSES = 10


def example(seed: int, family: str = "fashion", shape: tuple[int, ...] = (28, 28, 1)) -> Example:
    rng = np.random.default_rng(seed)
    cloud = rng.dirichlet(np.ones(CLASSES)).astype(np.float32)
    edge = rng.dirichlet(np.ones(CLASSES)).astype(np.float32)
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    return Example.of(family, "fashion_edge:1", "escalated", image, cloud, edge, 1e9 + seed)


def same(a: Example, b: Example) -> bool:
    return (
        (a.sha256, a.family, a.edge_version, a.kind, a.seen_at)
        == (b.sha256, b.family, b.edge_version, b.kind, b.seen_at)
        and a.image.shape == b.image.shape
        and a.image.dtype == b.image.dtype
        and np.array_equal(a.image, b.image)
        and a.cloud_probabilities.tobytes() == b.cloud_probabilities.tobytes()
        and a.edge_probabilities.tobytes() == b.edge_probabilities.tobytes()
        and b.cloud_probabilities.dtype == b.edge_probabilities.dtype == np.float32
    )


def test_images_and_probabilities_round_trip_exactly(tmp_path: Path) -> None:
    kept = [example(0), example(1, shape=(5, 7, 3)), example(2, family="pets")]
    with ExampleStore(tmp_path / "s.sqlite", 1 << 20) as store:
        assert all(store.add(e) for e in kept)
        back = [e for _, e in store.after(0, 10)]
        assert len(back) == 3 and all(same(a, b) for a, b in zip(kept, back))
        assert [e.sha256 for e in store.examples("fashion")] == [kept[0].sha256, kept[1].sha256]
        assert [e.family for e in store.examples("pets")] == ["pets"]
        assert store.size_bytes() == sum(e.nbytes for e in kept)


def test_a_sha256_is_kept_once(tmp_path: Path) -> None:
    with ExampleStore(tmp_path / "s.sqlite", 1 << 20) as store:
        assert store.add(example(0))
        assert not store.add(example(0))
        assert len(store) == 1 and store.size_bytes() == example(0).nbytes


def test_the_cap_drops_the_oldest_first_and_cursors_keep_growing(tmp_path: Path) -> None:
    size = example(0).nbytes
    with ExampleStore(tmp_path / "s.sqlite", 5 * size + size // 2) as store:
        for seed in range(12):
            assert store.add(example(seed))
            assert store.size_bytes() <= store.max_bytes
        rows = store.after(0, 100)
        assert [e.sha256 for _, e in rows] == [example(s).sha256 for s in range(7, 12)]
        assert [i for i, _ in rows] == list(range(8, 13))  # ids are never reused
        assert [e.sha256 for _, e in store.after(10, 2)] == [example(10).sha256, example(11).sha256]
        assert store.add(example(0))  # dropped before, so it is new again


def test_a_malformed_example_or_one_above_the_cap_is_refused(tmp_path: Path) -> None:
    good = example(0)
    with ExampleStore(tmp_path / "s.sqlite", good.nbytes) as store:
        wrong = [
            Example(**{**good.__dict__, "kind": "guess"}),
            Example(**{**good.__dict__, "sha256": "0" * 64}),
            Example(**{**good.__dict__, "image": good.image.astype(np.float32)}),
            Example(**{**good.__dict__, "edge_probabilities": good.edge_probabilities[:3]}),
            example(1, shape=(29, 28, 1)),
        ]
        for bad in wrong:
            with pytest.raises(ValueError):
                store.add(bad)
        assert len(store) == 0 and store.add(good)


def test_a_store_reopens_with_what_it_kept(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with ExampleStore(path, 1 << 20) as store:
        for seed in range(4):
            store.add(example(seed))
    with ExampleStore(path, 1 << 20) as store:
        assert len(store) == 4 and store.size_bytes() == 4 * example(0).nbytes
        assert [e.sha256 for e in store.examples()] == [example(s).sha256 for s in range(4)]
        assert not store.add(example(3)) and store.add(example(4))
        assert [e.sha256 for _, e in store.after(4, 10)] == [example(4).sha256]


WRITER = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_examples_store import example
from edgecascade.cloud.common.examples import ExampleStore
store = ExampleStore(Path({path!r}), 1 << 30)
for seed in range(1_000_000):
    store.add(example(seed))
    print(seed, flush=True)
"""


def test_a_writer_killed_mid_stream_loses_nothing_it_committed(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    code = WRITER.format(tests=str(Path(__file__).parent), path=str(path))
    writer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    committed = -1
    deadline = time.monotonic() + 60
    while committed < 200 and time.monotonic() < deadline:
        committed = int(writer.stdout.readline())
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    assert committed >= 200 and writer.returncode == -signal.SIGKILL

    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with ExampleStore(path, 1 << 30) as store:
        kept = list(store.examples())
        assert len(kept) >= committed + 1  # every example printed had been committed
        assert all(same(e, example(seed)) for seed, e in enumerate(kept))
        assert store.size_bytes() == sum(e.nbytes for e in kept)
        assert store.add(example(10**7))


def test_received_stores_are_per_family_and_edge_with_safe_names(tmp_path: Path) -> None:
    received = ReceivedExamples(tmp_path)
    assert received.keep("edge-1", example(0)) and received.keep("edge.2", example(1))
    received.close()
    assert received_files(tmp_path, "fashion") == [
        received_path(tmp_path, "fashion", "edge-1"),
        received_path(tmp_path, "fashion", "edge.2"),
    ]
    assert received_files(tmp_path, "pets") == []
    for family, edge in [("fashion", "../x"), ("..", "e"), ("fashion", ""), ("a/b", "e")]:
        with pytest.raises(InvalidInput, match="expected letters, digits"):
            received_path(tmp_path, family, edge)
    assert sorted(p.name for p in tmp_path.rglob("*.sqlite")) == ["edge-1.sqlite", "edge.2.sqlite"]
