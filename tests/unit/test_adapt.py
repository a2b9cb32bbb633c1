import numpy as np
import openvino as ov
import pytest
import torch

from edgecascade.cloud.build.adapt import distil, load_edge_members
from edgecascade.cloud.build.adapt_recipe import Recipe
from edgecascade.cloud.build.datasets import fashion
from edgecascade.cloud.build.families import FASHION_BASELINE_EDGE, WEIGHTS_DIR

EDGE_ONNX = WEIGHTS_DIR / "fashion_edge.onnx"


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return fashion("calibration").images[:256, ..., None]


def logits(model: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(images)).numpy()


@pytest.mark.parametrize(
    "tier, members",
    [("edge", 1), (FASHION_BASELINE_EDGE, 3)],  # the wide CNN, the ensemble
)
def test_an_edge_onnx_loads_back_into_the_training_nets(
    images: np.ndarray, tier: str, members: int
) -> None:
    path = WEIGHTS_DIR / f"fashion_{tier}.onnx"
    reference = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    expected = reference(images)[0]
    got = logits(load_edge_members(path), images)
    assert got.shape == expected.shape == (len(images), members, 10)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_a_model_of_other_layers_is_refused(tmp_path) -> None:
    from edgecascade.cloud.build.families.fashion_train import Members, cloud_net
    from edgecascade.cloud.build.families.onnx_export import Uint8Nhwc, export_onnx

    path = export_onnx(Uint8Nhwc(Members([cloud_net()]), 0, 1), tmp_path / "m.onnx", 28, 1)
    with pytest.raises(ValueError, match="not a fashion edge model"):
        load_edge_members(path)


def test_distillation_moves_every_member_towards_the_cloud_answers(images: np.ndarray) -> None:
    torch.set_num_threads(1)
    model = load_edge_members(EDGE_ONNX)
    collected, original = images[:128], images[128:]
    before = logits(model, collected).argmax(-1)
    # a "cloud" that answers the class the edge never picks for these images
    rarest = int(np.bincount(before[:, 0], minlength=10).argmin())
    soft = np.full((len(collected), 10), 0.02 / 9, np.float32)
    soft[:, rarest] = 0.98
    labels = fashion("calibration").labels[128:256]
    steps: list[int] = []
    distil(
        model,
        collected,
        soft,
        original,
        labels,
        Recipe(epochs=4, batch=32, lr=3e-3, temperature=2.0),
        lambda done, total, loss: steps.append(done),
    )
    after = logits(model, collected).argmax(-1)
    assert steps == list(range(1, 17))
    assert ((after == rarest).mean(0) > 0.5).all()  # each member follows the soft labels
    assert ((before == rarest).mean(0) < 0.2).all()


def test_escalation_needed_is_the_least_share_that_reaches_the_cloud() -> None:
    from edgecascade.edge.tools.bench_adapt import escalation_needed
    from edgecascade.router.policy.calibration import Split
    from edgecascade.router.policy.policies import MaxProbabilityPolicy

    rng = np.random.default_rng(0)
    n = 1000
    labels = rng.integers(0, 10, n)
    logits = rng.normal(0, 1, (n, 10)).astype(np.float32)
    confident = np.arange(n) >= 200  # the first 200 are unsure and wrong, the rest right
    logits[confident, labels[confident]] += 8
    logits[~confident, (labels[~confident] + 1) % 10] += 0.5
    split = Split(logits, labels, np.ones(n, bool))
    policy = MaxProbabilityPolicy(0.5, 1.0, False, False)
    needed = escalation_needed(split, policy)
    assert 0.196 <= needed <= 0.2  # all but 0.3 pt of the 20% wrong ones
    assert escalation_needed(Split(logits, labels, confident), policy) == 0.0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--family", "imagenet"], "runs on Fashion-MNIST"),
        (["--corruption", "gaussian_noise"], "in the cloud's training"),
        (["--corruption", "nosuch"], "nosuch"),
        (["--severity", "9"], "severity"),
    ],
)
def test_bench_adapt_mistakes_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    from typer.testing import CliRunner

    from edgecascade.edge.cli import app

    result = CliRunner().invoke(app, ["bench", "adapt", *args])
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output
