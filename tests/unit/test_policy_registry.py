"""Escalation policies register themselves; manifests and the CLI's help know kinds from the
registry alone."""

from collections.abc import Iterator

import numpy as np
import pytest
from typer.testing import CliRunner

from edgecascade.cloud.common.manifest import RoutingPolicy
from edgecascade.edge.cli import app
from edgecascade.router.policy.policies import (
    POLICIES,
    MaxProbabilityPolicy,
    ScorePolicy,
    UnknownPolicy,
    policy_from_manifest,
    register_policy,
)
from tests.helpers import words

Registry = dict[str, type[ScorePolicy]]


@pytest.fixture
def registry() -> Iterator[Registry]:
    """The registry, restored after the test to the kinds it held before."""
    saved = dict(POLICIES)
    yield POLICIES
    POLICIES.clear()
    POLICIES.update(saved)


def manifest_policy(kind: str) -> RoutingPolicy:
    # model_construct: the manifest's own field check would refuse kinds it does not list.
    return RoutingPolicy.model_construct(kind=kind, threshold=0.5)


def register_top2() -> type[ScorePolicy]:
    @register_policy
    class TopTwo(ScorePolicy):
        """Sum of the two highest probabilities."""

        name = "top2"

        @staticmethod
        def score(probabilities: np.ndarray, answer: np.ndarray) -> np.ndarray:
            return np.sort(probabilities, axis=-1)[..., -2:].sum(axis=-1)

    return TopTwo


def help_text(*command: str) -> str:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    return words(result.output)


def test_builtin_kinds_are_registered_in_order() -> None:
    assert list(POLICIES) == ["max_prob", "margin", "entropy"]
    assert POLICIES["max_prob"] is MaxProbabilityPolicy


def test_a_registered_policy_is_in_the_registry_manifests_and_help(registry: Registry) -> None:
    for command in (("router", "calibrate"), ("router", "evaluate")):
        assert "top2" not in help_text(*command)
    cls = register_top2()
    assert registry["top2"] is cls
    policy = policy_from_manifest(manifest_policy("top2"))
    assert isinstance(policy, cls) and policy.threshold == 0.5
    assert policy.confidence(np.log([[0.1, 0.3, 0.6]])) == pytest.approx([0.9])
    for command in (("router", "calibrate"), ("router", "evaluate")):
        assert "max_prob, margin, entropy, top2" in help_text(*command)


def test_an_unknown_kind_in_a_manifest_lists_the_known_kinds() -> None:
    with pytest.raises(UnknownPolicy) as err:
        policy_from_manifest(manifest_policy("top3"))
    assert str(err.value) == (
        "unknown escalation policy kind 'top3'; known kinds: max_prob, margin, entropy"
    )


def test_an_unknown_policy_option_is_a_usage_error_listing_the_known_kinds() -> None:
    result = CliRunner().invoke(app, ["router", "calibrate", "--policy", "top3"])
    assert result.exit_code == 2
    assert (
        "--policy: unknown escalation policy kind 'top3'; known kinds: max_prob, margin, "
        "entropy" in words(result.output)
    )
    assert "Traceback" not in result.output


def test_a_taken_kind_is_refused_and_the_first_stays(registry: Registry) -> None:
    register_top2()
    with pytest.raises(ValueError, match="'top2' of .*TopTwo is already registered by .*TopTwo"):
        register_top2()

    with pytest.raises(ValueError, match="'max_prob' .* already registered"):

        @register_policy
        class AlsoMaxProbability(MaxProbabilityPolicy):
            """Inherits the name max_prob."""

    assert registry["max_prob"] is MaxProbabilityPolicy and len(registry) == 4


@pytest.mark.parametrize("name", ["", "two words", "+mirror"])
def test_a_kind_must_be_a_plain_name(registry: Registry, name: str) -> None:
    with pytest.raises(ValueError, match="policy kind"):
        register_policy(type("Odd", (MaxProbabilityPolicy,), {"name": name}))
    assert list(registry) == ["max_prob", "margin", "entropy"]
