import numpy as np
import pytest

from edgecascade.cloud.common.manifest import RoutingPolicy
from edgecascade.router.policy.calibration import Target, cascade_curve, pick_threshold
from edgecascade.router.policy.policies import MaxProbabilityPolicy, policy_from_manifest, softmax


def test_softmax_rows_sum_to_one_and_survive_large_logits():
    probs = softmax(np.array([[1000.0, 1000.0, -1000.0], [0.0, np.log(3.0), 0.0]]))
    np.testing.assert_allclose(probs.sum(-1), 1.0)
    np.testing.assert_allclose(probs[0], [0.5, 0.5, 0.0], atol=1e-12)
    np.testing.assert_allclose(probs[1], [0.2, 0.6, 0.2])


def test_max_probability_escalates_below_threshold_only():
    policy = MaxProbabilityPolicy(threshold=0.6)
    confident = np.array([0.0, np.log(9.0)])  # p = [0.1, 0.9]
    unsure = np.array([0.0, 0.0, 0.0])  # p = 1/3 each
    assert policy.confidence(confident) == pytest.approx(0.9)
    assert not policy.escalate(policy.confidence(confident))
    assert policy.escalate(policy.confidence(unsure))
    assert not policy.escalate(0.6)  # at the threshold the edge answers


def test_manifest_threshold_and_override():
    assert policy_from_manifest(RoutingPolicy(threshold=0.7)).threshold == 0.7
    assert policy_from_manifest(RoutingPolicy(threshold=0.7), threshold=0.2).threshold == 0.2


def test_cascade_curve_escalates_least_confident_first():
    confidence = np.array([0.9, 0.2, 0.5, 0.8])
    edge_ok = np.array([1, 0, 0, 1], bool)
    cloud_ok = np.array([1, 1, 1, 0], bool)
    scores, accuracy = cascade_curve(confidence, edge_ok, cloud_ok)
    np.testing.assert_array_equal(scores, [0.2, 0.5, 0.8, 0.9])
    np.testing.assert_allclose(accuracy, [0.5, 0.75, 1.0, 0.75, 0.75])


def test_pick_threshold_reaches_target_with_least_escalation():
    rng = np.random.default_rng(0)
    n = 2000
    confidence = rng.uniform(0.3, 1.0, n)
    edge_ok = rng.uniform(size=n) < confidence  # confident answers are right more often
    cloud_ok = rng.uniform(size=n) < 0.95
    point = pick_threshold(confidence, edge_ok, cloud_ok, Target(max_drop=0.003))
    escalate = confidence < point.threshold
    cascade = np.where(escalate, cloud_ok, edge_ok).mean()
    assert escalate.mean() == pytest.approx(point.escalation_rate)
    assert cascade == pytest.approx(point.cascade_accuracy)
    assert cascade >= cloud_ok.mean() - 0.003
    # One input fewer escalated would miss the target.
    order = np.argsort(confidence)
    k = int(escalate.sum())
    fewer = edge_ok.copy()
    fewer[order[: k - 1]] = cloud_ok[order[: k - 1]]
    assert fewer.mean() < cloud_ok.mean() - 0.003


def test_pick_threshold_needs_no_escalation_when_edge_is_as_good():
    confidence = np.array([0.4, 0.6, 0.9])
    ok = np.array([True, True, False])
    point = pick_threshold(confidence, ok, ok, Target(max_drop=0.0))
    assert point.escalation_rate == 0.0
    assert not (confidence < point.threshold).any()
