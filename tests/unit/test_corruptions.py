"""The corruption registry: deterministic, shape- and dtype-preserving, stronger with severity."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from edgecascade.cloud.build import corruptions
from edgecascade.cloud.build.corruptions import (
    CORRUPTIONS,
    SEVERITIES,
    UnknownCorruption,
    UnknownSeverity,
    corrupt,
    register,
)
from edgecascade.edge.cli import app


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """64 synthetic garments: a bright rectangle with texture on a dark background."""
    rng = np.random.default_rng(1)
    out = np.zeros((64, 28, 28), np.uint8)
    for image in out:
        top, left = rng.integers(2, 8, 2)
        image[top : top + 18, left : left + 14] = rng.integers(120, 250, (18, 14))
    return out


def test_the_suite_has_trained_for_and_held_out_kinds() -> None:
    trained = {name for name, c in CORRUPTIONS.items() if c.in_training}
    assert trained == {
        "gaussian_noise",
        "gaussian_blur",
        "contrast",
        "brightness",
        "rotation",
        "shift",
    }
    assert {"jpeg", "pixelate", "motion_blur", "salt_and_pepper"} <= set(CORRUPTIONS) - trained


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_shape_dtype_and_determinism(images: np.ndarray, name: str) -> None:
    for severity in SEVERITIES:
        out = corrupt(images, name, severity, seed=3)
        assert out.shape == images.shape and out.dtype == np.uint8
        assert np.array_equal(out, corrupt(images, name, severity, seed=3))
    assert corrupt(images[:0], name, 1).shape == (0, 28, 28)


@pytest.mark.parametrize(
    "name", ["gaussian_noise", "rotation", "shift", "motion_blur", "salt_and_pepper"]
)
def test_random_kinds_follow_the_seed(images: np.ndarray, name: str) -> None:
    assert not np.array_equal(corrupt(images, name, 3, seed=0), corrupt(images, name, 3, seed=1))


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_severity_moves_images_further(images: np.ndarray, name: str) -> None:
    distance = [np.abs(corrupt(images, name, s).astype(float) - images).mean() for s in SEVERITIES]
    assert distance[0] > 0
    assert all(a < b for a, b in zip(distance, distance[1:])), distance


def test_unknown_names_and_severities_are_refused(images: np.ndarray) -> None:
    with pytest.raises(
        UnknownCorruption, match="unknown corruption 'fog'; known corruptions: gaussian_noise"
    ):
        corrupt(images, "fog", 1)
    with pytest.raises(UnknownSeverity, match="severity 6: give one of 1-5"):
        corrupt(images, "jpeg", 6)


def test_a_new_corruption_is_one_decorated_function(
    images: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(corruptions, "CORRUPTIONS", dict(CORRUPTIONS))

    @register("invert", False, [51, 102, 153, 204, 255])
    def _invert(batch: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
        return np.abs(batch.astype(float) - level)

    assert np.array_equal(corrupt(images, "invert", 5), 255 - images)
    with pytest.raises(ValueError, match="'invert': taken"):
        register("invert", False, [1, 2, 3, 4, 5])(_invert)
    with pytest.raises(ValueError, match="not 5 levels"):
        register("other", False, [1, 2])(_invert)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--corruption", "fog"], "error: unknown corruption 'fog'; known corruptions:"),
        (["--severity", "9"], "error: corruption severity 9: give one of 1-5"),
    ],
)
def test_cli_mistakes_are_one_error_line(tmp_path, monkeypatch, args, message) -> None:
    (tmp_path / "fashion").mkdir()
    (tmp_path / "fashion" / "manifest.json").write_text("{}")  # refused before it is read
    monkeypatch.setenv("EDGECASCADE_ARTIFACTS", str(tmp_path))
    result = CliRunner().invoke(app, ["router", "robustness", *args])
    assert result.exit_code == 2 and result.output.startswith(message), result.output


def test_cli_asks_for_a_build_first(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EDGECASCADE_ARTIFACTS", str(tmp_path))
    result = CliRunner().invoke(app, ["router", "robustness", "--family", "fashion"])
    assert result.exit_code == 2
    assert "has no manifest.json: run `edgecascade models build --family fashion`" in result.output
