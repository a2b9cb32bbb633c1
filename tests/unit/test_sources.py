"""Frame sources on real images: drop-oldest under a slow consumer, reconnect with back-off;
the registry of source kinds."""

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecascade.cloud.build import datasets
from edgecascade.cloud.common.errors import UserError
from edgecascade.edge.sources.base import (
    SourceFrame,
    SourceUnavailable,
    open_source,
    register,
    source_kinds,
)
from edgecascade.edge.sources.camera import camera
from edgecascade.edge.sources.reader import FrameBuffer, FrameReader


def frame(i: int) -> SourceFrame:
    return SourceFrame(i, None, time.time(), np.zeros((2, 2, 3), np.uint8))


def image_folder(path: Path, n: int) -> Path:
    """n Fashion-MNIST test images as PNG files, in name order."""
    path.mkdir()
    for i, image in enumerate(datasets.fashion("test").head(n).images):
        cv2.imwrite(str(path / f"{i:04d}.png"), image)
    return path


def drain(buffer: FrameBuffer, delay_s: float = 0.0) -> list[SourceFrame]:
    frames = []
    while (f := buffer.get()) is not None:
        frames.append(f)
        time.sleep(delay_s)
    return frames


def test_full_buffer_drops_the_oldest_and_counts_them():
    buffer = FrameBuffer(3, drop_oldest=True)
    for i in range(10):
        buffer.put(frame(i))
    buffer.close()
    assert [f.index for f in drain(buffer)] == [7, 8, 9]
    assert buffer.dropped == 7


def test_without_drop_the_reader_waits_for_room():
    buffer = FrameBuffer(1, drop_oldest=False)
    buffer.put(frame(0))
    writer = threading.Thread(target=buffer.put, args=(frame(1),))
    writer.start()
    writer.join(0.2)
    assert writer.is_alive(), "put returned although the buffer was full"
    assert buffer.get().index == 0
    writer.join(2.0)
    buffer.close()
    assert [f.index for f in drain(buffer)] == [1] and buffer.dropped == 0


def test_slow_consumer_of_a_paced_source_gets_the_newest_frames(tmp_path):
    folder = image_folder(tmp_path / "frames", 40)
    buffer = FrameBuffer(2, drop_oldest=True)
    reader = FrameReader(open_source(str(folder)), buffer, max_fps=400)
    reader.start()
    got = drain(buffer, delay_s=0.03)  # ~33 fps against a 400 fps source
    reader.join(5)
    assert buffer.dropped > 10
    assert len(got) + buffer.dropped == reader.frames_read == 40
    assert got[-1].index == 39, "the newest frame must survive"
    assert [f.index for f in got] == sorted(f.index for f in got)
    assert got[0].image.shape == (28, 28, 3)


def test_folder_renamed_away_and_back_is_reconnected_where_it_left_off(tmp_path):
    folder = image_folder(tmp_path / "frames", 12)
    away = tmp_path / "away"
    buffer = FrameBuffer(1, drop_oldest=False)
    reader = FrameReader(open_source(str(folder)), buffer, reconnect_timeout_s=10)
    reader.start()
    first = buffer.get()
    folder.rename(away)
    back = threading.Timer(0.5, away.rename, args=(folder,))
    back.start()
    got = [first, *drain(buffer)]
    back.join()
    reader.join(5)
    assert reader.reconnects >= 1
    assert [f.index for f in got] == list(range(12))
    expected = cv2.cvtColor(cv2.imread(str(folder / "0011.png")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(got[-1].image, expected)


def test_a_source_that_never_comes_back_fails_after_the_reconnect_timeout(tmp_path):
    buffer = FrameBuffer(2, drop_oldest=True)
    reader = FrameReader(
        open_source(str(tmp_path / "missing.avi")), buffer, reconnect_timeout_s=0.5
    )
    started = time.monotonic()
    reader.start()
    with pytest.raises(SourceUnavailable, match="missing.avi"):
        buffer.get()
    assert 0.4 < time.monotonic() - started < 5


def test_the_registry_lists_the_four_built_in_kinds_in_the_order_they_are_tried():
    assert [kind.name for kind in source_kinds()] == ["camera", "url", "folder", "file"]
    assert all(kind.description for kind in source_kinds())


def test_a_source_string_goes_to_the_first_kind_that_claims_it_unless_a_kind_is_named(tmp_path):
    assert str(open_source("0")) == "camera 0" and open_source("0").live
    assert open_source("rtsp://cam/1").live
    assert str(open_source(str(tmp_path))) == f"folder {tmp_path}"
    assert not open_source(str(tmp_path / "clip.avi")).live
    named = open_source("0", kind="folder")
    assert str(named) == "folder 0" and not named.live


def test_an_unknown_kind_is_one_user_error_that_lists_the_known_ones():
    with pytest.raises(UserError) as error:
        open_source("0", kind="nosuch")
    assert str(error.value) == ("unknown source kind 'nosuch'; known: camera, url, folder, file")


def test_a_kind_is_registered_once():
    with pytest.raises(ValueError, match="'camera' is registered twice"):
        register("camera", "again", claims=str.isdigit)(camera)
