"""The paired bootstrap behind the policy-versus-baseline claims of `router evaluate`."""

import numpy as np
import pytest

from edgecascade.router.policy.calibration import Split, cascade_curve
from edgecascade.router.policy.evaluation import Option, _bootstrap_curves, _significance


def split(n: int = 4000, seed: int = 0) -> tuple[Split, Option]:
    """Edge right 85% of the time, cloud 93%; and a noisy score of the edge being right."""
    rng = np.random.default_rng(seed)
    edge_ok = rng.uniform(size=n) < 0.85
    cloud_ok = np.where(edge_ok, rng.uniform(size=n) < 0.97, rng.uniform(size=n) < 0.7)
    score = edge_ok + rng.normal(0, 0.8, n)
    logits = np.zeros((n, 2))
    return Split(logits, np.zeros(n, int), cloud_ok), Option(score, edge_ok)


def test_resampled_curves_centre_on_the_curve():
    data, option = split()
    ks = np.arange(0, 4001, 400)
    curves = _bootstrap_curves(data, {"s": option}, ks, resamples=300)["s"]
    assert curves.shape == (300, len(ks))
    truth = cascade_curve(option.score, option.edge_correct, data.cloud_correct)[1][ks]
    np.testing.assert_allclose(curves.mean(0), truth, atol=0.003)
    assert curves[:, 0] == pytest.approx(curves[:, 0].mean(), abs=0.03)  # edge-only varies
    assert curves[:, 5].std() > 0


def test_a_score_against_itself_is_never_significant_and_a_better_one_is():
    data, option = split()
    gain = data.cloud_correct.astype(int) - option.edge_correct
    oracle = Option(-gain, option.edge_correct)  # escalate where it gains
    ks = np.arange(0, 4001, 100)
    rates = ks / 4000
    curves = _bootstrap_curves(data, {"s": option, "again": option, "oracle": oracle}, ks, 300)
    same = _significance(curves["s"], curves["again"], rates, 0.3)
    assert same["significantly_less_accurate_at_rates"] == []
    assert same["fraction_significantly_more_accurate"] == 0.0
    assert same["share_of_resamples_at_least_as_accurate_at_every_rate"] == 1.0
    assert set(same["interval_pt"]["low"]) == {0.0} == set(same["interval_pt"]["high"])
    better = _significance(curves["oracle"], curves["s"], rates, 0.3)
    assert better["significantly_less_accurate_at_rates"] == []
    assert better["fraction_significantly_more_accurate_up_to_goal_escalation"] > 0.8
    worse = _significance(curves["s"], curves["oracle"], rates, 0.3)
    assert 0.05 in worse["significantly_less_accurate_at_rates"]
    assert worse["share_of_resamples_at_least_as_accurate_at_every_rate"] == 0.0
