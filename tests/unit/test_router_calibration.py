"""Escalation scores, temperature scaling, ECE and threshold targets on known logits."""

import numpy as np
import pytest

from edgecascade.cloud.build.families import FAMILIES
from edgecascade.cloud.common.manifest import RoutingPolicy
from edgecascade.router.policy.calibration import (
    Split,
    Target,
    calibrate,
    operating_point,
    paired_null_variance,
    pick_threshold,
)
from edgecascade.router.policy.policies import (
    EntropyPolicy,
    MarginPolicy,
    MaxProbabilityPolicy,
    policy_from_manifest,
    softmax,
)
from edgecascade.router.policy.temperature import expected_calibration_error, fit_temperature


def sampled(temperature: float, n: int = 20000, k: int = 10, seed: int = 0):
    """Logits whose labels are drawn from softmax(logits / temperature)."""
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(0.0, 2.5, (n, k))
    probs = softmax(true_logits)
    labels = (probs.cumsum(-1) > rng.uniform(size=(n, 1))).argmax(-1)
    return true_logits * temperature, labels


@pytest.mark.parametrize("true_temperature", [0.5, 2.0])
def test_fit_temperature_recovers_the_temperature_and_lowers_ece(true_temperature):
    logits, labels = sampled(true_temperature)
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(true_temperature, rel=0.05)
    before = expected_calibration_error(softmax(logits), labels)
    after = expected_calibration_error(softmax(logits / temperature), labels)
    assert after < 0.02 < before


def test_ece_on_hand_made_probabilities():
    probs = np.tile([0.8, 0.2], (10, 1))
    half_right = np.array([0] * 5 + [1] * 5)
    assert expected_calibration_error(probs, half_right) == pytest.approx(0.3)
    assert expected_calibration_error(probs, np.array([0] * 8 + [1] * 2)) == pytest.approx(0.0)


def test_scores_on_hand_made_logits():
    logits = np.log(np.array([[0.6, 0.3, 0.1], [1 / 3, 1 / 3, 1 / 3], [1.0, 1e-12, 1e-12]]))
    p = np.array([0.6, 0.3, 0.1])
    np.testing.assert_allclose(MaxProbabilityPolicy(0.5).confidence(logits), [0.6, 1 / 3, 1.0])
    np.testing.assert_allclose(MarginPolicy(0.5).confidence(logits), [0.3, 0.0, 1.0], atol=1e-9)
    sedna = 1 + (p * np.log(p)).sum() / np.log(3)
    np.testing.assert_allclose(EntropyPolicy(0.5).confidence(logits), [sedna, 0.0, 1.0], atol=1e-9)


def test_scores_use_the_temperature():
    logits = np.array([2.0, 1.0, 0.0])
    for cls in (MaxProbabilityPolicy, MarginPolicy, EntropyPolicy):
        assert cls(0.5, temperature=2.0).confidence(logits) == pytest.approx(
            cls(0.5).confidence(logits / 2.0)
        )
    # A hotter temperature flattens the distribution: less confident on every score.
    for cls in (MaxProbabilityPolicy, MarginPolicy, EntropyPolicy):
        assert cls(0.5, 3.0).confidence(logits) < cls(0.5, 1.0).confidence(logits)
    with pytest.raises(ValueError, match="temperature"):
        MarginPolicy(0.5, temperature=0.0)


def test_policy_from_manifest_kinds_and_old_manifests():
    policy = policy_from_manifest(RoutingPolicy(kind="margin", threshold=0.4, temperature=1.5))
    assert (type(policy), policy.name, policy.threshold, policy.temperature) == (
        MarginPolicy,
        "margin",
        0.4,
        1.5,
    )
    old = RoutingPolicy.model_validate({"kind": "max_prob", "threshold": 0.7})
    assert old.temperature == 1.0
    assert isinstance(policy_from_manifest(old), MaxProbabilityPolicy)


def test_target_parsing():
    assert Target.parse_accuracy("cloud-0.3pt").max_drop == pytest.approx(0.003)
    assert Target.parse_accuracy("0.925") == Target(accuracy=0.925)
    for bad in ("cloud-0.3", "ninety", "1.5"):
        with pytest.raises(ValueError):
            Target.parse_accuracy(bad)
    with pytest.raises(ValueError, match="exactly one"):
        Target(accuracy=0.9, max_escalation=0.2)
    assert Target.parse("max_escalation=0.2") == Target(max_escalation=0.2)
    assert Target.parse("cloud-0.3pt") == Target(max_drop=0.003)
    for bad in ("max_escalation=lots", "max_escalation=2"):
        with pytest.raises(ValueError):
            Target.parse(bad)


def test_every_family_declares_a_target_calibration_can_parse():
    """`models build` calibrates each family for its own target; imagenet, whose 300 crops of
    20 photos cannot say where its cloud is right, for an escalation budget."""
    targets = {name: Target.parse(f.calibration_target) for name, f in FAMILIES.items()}
    assert targets["fashion"] == Target(max_drop=0.003)
    assert targets["imagenet"].max_escalation == 0.2


def random_cascade(n: int = 4000, seed: int = 1):
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0.3, 1.0, n)
    edge_ok = rng.uniform(size=n) < confidence
    cloud_ok = rng.uniform(size=n) < 0.95
    return confidence, edge_ok, cloud_ok


def test_max_escalation_hits_the_rate():
    confidence, edge_ok, cloud_ok = random_cascade()
    point = pick_threshold(confidence, edge_ok, cloud_ok, Target(max_escalation=0.2))
    assert point.escalation_rate == pytest.approx(0.2)
    assert (confidence < point.threshold).mean() == pytest.approx(0.2)
    safe = pick_threshold(confidence, edge_ok, cloud_ok, Target(max_escalation=0.2), 0.95)
    rate = safe.escalation_rate
    assert rate < 0.2
    assert rate + 1.6449 * np.sqrt(rate * (1 - rate) / len(confidence)) <= 0.2
    assert rate + 0.005 > 0.2 - 1.6449 * np.sqrt(0.16 / len(confidence))  # not needlessly low


def test_accuracy_targets_and_assurance():
    confidence, edge_ok, cloud_ok = random_cascade()
    absolute = pick_threshold(confidence, edge_ok, cloud_ok, Target(accuracy=0.9))
    assert absolute.cascade_accuracy >= 0.9
    loose = pick_threshold(confidence, edge_ok, cloud_ok, Target(max_drop=0.003))
    safe = pick_threshold(confidence, edge_ok, cloud_ok, Target(max_drop=0.003), 0.95)
    assert safe.escalation_rate > loose.escalation_rate
    assert safe.cascade_accuracy >= loose.cascade_accuracy >= cloud_ok.mean() - 0.003
    with pytest.raises(ValueError, match="out of reach"):
        pick_threshold(confidence, edge_ok, cloud_ok, Target(accuracy=0.99))


def test_a_window_bound_holds_on_that_many_new_inputs_where_an_average_bound_does_not():
    """Thresholds picked on 2,000 inputs of a known population at 90% assurance, then judged
    on 2,000 new ones, 400 times: the cloud-0.3pt target holds about 90% of the time with the
    window's prediction bound and clearly less often with a bound on the average alone."""
    rng = np.random.default_rng(7)
    n, trials, target = 2000, 400, Target(max_drop=0.003)

    def draw():
        confidence = rng.uniform(0.3, 1.0, n)
        return confidence, rng.uniform(size=n) < confidence, rng.uniform(size=n) < 0.95

    held = {None: 0, n: 0}
    escalated = {None: 0.0, n: 0.0}
    for _ in range(trials):
        calibration, new = draw(), draw()
        for window in held:
            point = pick_threshold(*calibration, target, 0.9, window)
            judged = operating_point(new[0], point.threshold, new[1], new[2])
            held[window] += judged.cascade_accuracy >= judged.cloud_accuracy - 0.003 - 1e-12
            escalated[window] += point.escalation_rate / trials
    assert held[n] / trials >= 0.85 and held[None] / trials <= held[n] / trials - 0.05
    assert escalated[n] > escalated[None]
    with pytest.raises(ValueError, match="window must be a positive"):
        pick_threshold(*draw(), target, 0.9, 0)


def test_calibrate_fits_temperature_and_uses_the_named_policy():
    logits, labels = sampled(2.0, n=5000)
    rng = np.random.default_rng(2)
    split = Split(
        edge_logits=logits, labels=labels, cloud_correct=rng.uniform(size=len(labels)) < 0.9
    )
    result = calibrate(split, Target(max_escalation=0.3), kind="entropy", assurance=0.5)
    assert isinstance(result.policy, EntropyPolicy)
    assert result.policy.temperature == pytest.approx(2.0, rel=0.1)
    assert result.point.escalation_rate == pytest.approx(0.3)
    assert split.operating_point(result.policy) == result.point
    assert result.ece_after < result.ece_before
    best = calibrate(split, Target(max_escalation=0.3))
    assert best.policy.name in {"max_prob", "margin", "entropy"}
    assert not best.policy.mirror and not best.policy.ensemble
    for look in ("mirror", "ensemble"):
        with pytest.raises(ValueError, match=f"no edge logits to calibrate a {look} policy"):
            calibrate(split, Target(max_escalation=0.3), **{look: True})


def test_mirrored_answer_is_the_mean_of_both_views():
    # Row 0: both views back class 0. Row 1: the mirror backs class 1, strongly enough that
    # the mean does too: the answer is class 1, not the image-as-given view's class 0.
    given = np.log(np.array([[0.8, 0.1, 0.1], [0.7, 0.2, 0.1]]))
    mirror = np.log(np.array([[0.6, 0.3, 0.1], [0.1, 0.9, 0.0001]]))
    both = np.stack([given, mirror], axis=1)
    probabilities, score = MaxProbabilityPolicy(0.5, mirror=True).answer(both)
    np.testing.assert_array_equal(probabilities.argmax(-1), [0, 1])
    np.testing.assert_allclose(probabilities[1], [0.4, 0.55, 0.05], atol=1e-4)
    assert score == pytest.approx([0.7, 0.55], abs=1e-4)
    margin = MarginPolicy(0.5, mirror=True).confidence(both)
    assert margin == pytest.approx([0.7 - 0.2, 0.55 - 0.4], abs=1e-4)
    assert MaxProbabilityPolicy(0.5).confidence(given) == pytest.approx([0.8, 0.7])
    with pytest.raises(ValueError, match=r"takes \[\.\.\., views, K\]"):
        MaxProbabilityPolicy(0.5, mirror=True).confidence(given[0])
    policy = policy_from_manifest(RoutingPolicy(threshold=0.6, mirror=True))
    assert policy.mirror and policy.label == "max_prob+mirror"


def test_calibrate_takes_the_mirror_when_it_ranks_better():
    """A split whose mirrored view says which edge answers are wrong: the mirrored policy
    ranks the inputs better and wins; without it the plain policy stays."""
    logits, labels = sampled(1.0, n=4000, seed=3)
    edge_correct = logits.argmax(-1) == labels
    mirrored = logits.copy()
    rows = np.flatnonzero(~edge_correct)
    mirrored[rows, logits[rows].argmax(-1)] -= 6.0  # the mirror does not back wrong answers
    split = Split(logits, labels, np.ones(len(labels), bool), mirrored)
    result = calibrate(split, Target(max_escalation=0.2), kind="max_prob")
    assert result.policy.mirror and result.policy.label == "max_prob+mirror"
    plain = calibrate(split, Target(max_escalation=0.2), kind="max_prob", mirror=False)
    assert not plain.policy.mirror
    assert result.point.cascade_accuracy > plain.point.cascade_accuracy


def test_views_put_member_0_on_the_image_as_given_first():
    """Ensemble logits [N, members, K] of the images and of their mirrors: each policy takes the
    views it looks at, the members on the image as given first."""
    rng = np.random.default_rng(5)
    logits, mirrored = rng.normal(size=(2, 4, 3, 10))
    expected = {
        (False, False): logits[:, 0],
        (False, True): logits,
        (True, False): np.stack([logits[:, 0], mirrored[:, 0]], axis=1),
        (True, True): np.concatenate([logits, mirrored], axis=1),
    }
    for (mirror, ensemble), views in expected.items():
        policy = MaxProbabilityPolicy(0.5, mirror=mirror, ensemble=ensemble)
        np.testing.assert_array_equal(policy.views(logits, mirrored), views)
    # A one-member model's [N, K] logits are the same as [N, 1, K].
    np.testing.assert_array_equal(
        MaxProbabilityPolicy(0.5, mirror=True).views(logits[:, 0], mirrored[:, 0]),
        expected[True, False],
    )
    with pytest.raises(ValueError, match="needs the edge logits of the mirrored images"):
        MaxProbabilityPolicy(0.5, mirror=True).views(logits)
    policy = policy_from_manifest(RoutingPolicy(threshold=0.6, mirror=True, ensemble=True))
    assert policy.ensemble and policy.label == "max_prob+ensemble+mirror"


def test_ensemble_answers_with_the_mean_of_its_members():
    # Row 0: both members back class 0. Row 1: member 1 backs class 2, and so does the mean.
    member0 = np.log(np.array([[0.8, 0.1, 0.1], [0.6, 0.1, 0.3]]))
    member1 = np.log(np.array([[0.9, 0.05, 0.05], [0.2, 0.1, 0.7]]))
    views = MaxProbabilityPolicy(0.5, ensemble=True).views(np.stack([member0, member1], axis=1))
    probabilities, score = MaxProbabilityPolicy(0.5, ensemble=True).answer(views)
    np.testing.assert_array_equal(probabilities.argmax(-1), [0, 2])
    assert score == pytest.approx([0.85, 0.5])
    assert (
        EntropyPolicy(0.5, ensemble=True).confidence(views)[1]
        < EntropyPolicy(0.5).confidence(member0)[1]
    )


def test_calibrate_takes_the_ensemble_when_it_ranks_better():
    """Member 1 does not back member 0's wrong answers: the ensemble ranks inputs better and
    wins; a one-view policy's edge answers are member 0's."""
    logits, labels = sampled(1.0, n=4000, seed=4)
    edge_correct = logits.argmax(-1) == labels
    other = logits.copy()
    rows = np.flatnonzero(~edge_correct)
    other[rows, logits[rows].argmax(-1)] -= 6.0
    split = Split(np.stack([logits, other], axis=1), labels, np.ones(len(labels), bool))
    assert split.members == 2
    np.testing.assert_array_equal(split.edge_correct(MaxProbabilityPolicy(0.0)), edge_correct)
    result = calibrate(split, Target(max_escalation=0.2), kind="max_prob")
    assert result.policy.ensemble and not result.policy.mirror
    single = calibrate(split, Target(max_escalation=0.2), kind="max_prob", ensemble=False)
    assert not single.policy.ensemble
    assert result.point.cascade_accuracy > single.point.cascade_accuracy


# A population whose cascade falls short of the cloud by 1.2 points wherever the threshold sits
# in a wide plateau of confidences (0.3-0.6: the cloud alone right as often as the edge alone),
# then by less as fewer inputs escalate, within 1 point (the target) only from 0.633 up. Regions
# of confidence, and in each how often only the cloud / only the edge answers right.
PLATEAU_EDGES = np.array([0.0, 0.3, 0.6, 0.8, 1.0])
ONLY_CLOUD = np.array([0.3, 0.2, 0.06, 0.0])
ONLY_EDGE = np.array([0.0, 0.2, 0.0, 0.0])


def plateau_shortfall(threshold: float) -> float:
    """How far the cascade falls short of the cloud on the population at `threshold`."""
    low = np.clip(PLATEAU_EDGES[:-1], threshold, 1.0)
    high = np.clip(PLATEAU_EDGES[1:], threshold, 1.0)
    return float(((ONLY_CLOUD - ONLY_EDGE) * (high - low)).sum())


def plateau_sample(rng: np.random.Generator, n: int):
    confidence = rng.uniform(size=n)
    region = np.searchsorted(PLATEAU_EDGES, confidence, side="right") - 1
    draw = rng.uniform(size=n)
    only_cloud = draw < ONLY_CLOUD[region]
    only_edge = (draw >= ONLY_CLOUD[region]) & (draw < ONLY_CLOUD[region] + ONLY_EDGE[region])
    return confidence, ~only_cloud, ~only_edge


def test_the_target_holds_at_the_assurance_where_the_gap_hovers_past_it():
    """Thresholds picked on 2,000 inputs at 90% assurance, 300 times: the population's cascade
    is within 1 point of the cloud in at least about 90% of them. Taking the first escalation
    rate whose bound clears (scanning up from none) stopped in the plateau in 33% of them, and
    the fixed sequence with the observed spread (a Wald bound, too narrow where few inputs
    disagree) in 16%."""
    rng = np.random.default_rng(11)
    target, trials = Target(max_drop=0.01), 300
    missed, escalated = 0, 0.0
    for _ in range(trials):
        point = pick_threshold(*plateau_sample(rng, 2000), target, 0.9)
        missed += plateau_shortfall(point.threshold) > 0.01 + 1e-12
        escalated += point.escalation_rate / trials
    assert missed / trials <= 0.13
    assert escalated < 0.7  # the least that meets the target escalates 63.3%


def test_paired_bound_knows_the_gap_where_each_accuracy_alone_is_uncertain():
    """Edge and cloud right on the same 4,750 of 5,000 inputs, but for 5 only the cloud gets:
    the cascade falls 0.1 point short without escalating, and at 99% assurance that is within
    0.3 points. Bounding each accuracy on its own (about +-0.7 points each) could not say so."""
    n, z = 5000, 2.3263
    confidence = np.linspace(0.0, 1.0, n)
    edge_ok = np.arange(n) % 20 != 0
    cloud_ok = edge_ok.copy()
    cloud_ok[:100:20] = True  # 5 inputs only the cloud answers right
    point = pick_threshold(confidence, edge_ok, cloud_ok, Target(max_drop=0.003), 0.99)
    assert point.escalation_rate == 0.0
    assert point.cascade_accuracy == pytest.approx(cloud_ok.mean() - 0.001)
    unpaired = z * np.sqrt((edge_ok.var() + cloud_ok.var()) / n)
    assert cloud_ok.mean() - edge_ok.mean() + unpaired > 0.003


@pytest.mark.parametrize(
    ("only_cloud", "only_edge", "n", "drop"),
    [(30, 12, 5000, 0.003), (0, 0, 5000, 0.003), (5, 40, 2000, 0.01), (17, 17, 1000, 0.0)],
)
def test_paired_null_variance_is_the_constrained_maximum_likelihood(only_cloud, only_edge, n, drop):
    """The spread under 'the cascade falls exactly `drop` short': 2 p + drop (1 - drop), p the
    probability that only the edge is right that maximises the likelihood of the counts when
    only the cloud is right with probability p + drop (found here on a fine grid)."""
    p = np.linspace(1e-9, (1 - drop) / 2 - 1e-9, 2_000_001)
    loglik = (
        only_cloud * np.log(p + drop)
        + only_edge * np.log(p)
        + (n - only_cloud - only_edge) * np.log(1 - 2 * p - drop)
    )
    best = p[np.argmax(loglik)]
    variance = paired_null_variance(np.array([only_cloud]), np.array([only_edge]), n, drop)
    assert variance[0] == pytest.approx(2 * best + drop * (1 - drop), abs=2e-6)
