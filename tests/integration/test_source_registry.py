"""A frame source registered by a test is read by `edge run`'s runner, through a real edge
agent, like the built-in kinds."""

import io
import json
from collections.abc import Iterator

import cv2
import numpy as np
import pytest

from edgecascade.cloud.build import datasets
from edgecascade.edge.sources import base
from edgecascade.edge.sources.base import Reading, describe_kinds, register, source_kinds
from edgecascade.edge.tools.process import EdgeProcess
from edgecascade.edge.tools.runner import run

pytestmark = pytest.mark.integration


class FashionTestImages:
    """The first n Fashion-MNIST test images, as RGB frames."""

    live = False

    def __init__(self, n: int):
        self.n = n

    def __str__(self) -> str:
        return f"fashion test images 0..{self.n - 1}"

    def open(self) -> Iterator[Reading]:
        for image in datasets.fashion("test").head(self.n).images:
            yield None, cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)


@pytest.fixture
def fashion_test_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    source_kinds()  # the built-ins first, then a registry of this test's own
    monkeypatch.setattr(base, "SOURCE_KINDS", dict(base.SOURCE_KINDS))
    register(
        "fashion-test",
        "fashion-test:N, the first N Fashion-MNIST test images",
        claims=lambda spec: spec.startswith("fashion-test:"),
        rank=0,
    )(lambda spec: FashionTestImages(int(spec.removeprefix("fashion-test:"))))


def test_a_registered_source_is_read_by_the_runner(fashion_manifest, fashion_test_kind, tmp_path):
    assert "fashion-test: fashion-test:N" in describe_kinds()  # `edge run --help` shows it
    out = io.StringIO()
    with EdgeProcess("fashion", None, tmp_path / "edge.log") as agent:
        stats = run("fashion-test:30", agent.address, out, top_k=1)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert stats.source == "fashion test images 0..29" and stats.answered == 30
    assert [line["frame"] for line in lines] == list(range(30))
    top1 = np.array([line["top1"]["class_id"] for line in lines])
    labels = np.asarray(datasets.fashion("test").head(30).labels)
    assert (top1 == labels).mean() > 0.7
