"""The agent's trace settings (Triton's TraceSetting) over its tracing, without servers: what
they show, what each change does to the spans and the sampler, and what is refused."""

import random

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision

from edgecascade.cloud.common import tracing
from edgecascade.cloud.common.errors import InvalidInput
from edgecascade.edge.serving import tracesettings

FIXED = {
    "trace_count": ["-1"],
    "log_frequency": ["0"],
    "trace_file": [""],
    "trace_mode": ["opentelemetry"],
}


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts from a process that has changed nothing yet."""
    monkeypatch.setattr(tracing, "_exporting", False)
    monkeypatch.setattr(tracing, "_enabled", True)
    monkeypatch.setattr(tracing, "_ratio", 1.0)
    monkeypatch.setattr(tracesettings, "_at_start", {})


def test_without_a_collector_tracing_is_off_and_cannot_be_turned_on() -> None:
    assert tracesettings.current() == {"trace_level": ["OFF"], "trace_rate": ["1"], **FIXED}
    with pytest.raises(InvalidInput, match="--otlp-endpoint"):
        tracesettings.update({"trace_level": ["TIMESTAMPS"]})
    assert tracesettings.update({"trace_level": ["OFF"]})["trace_level"] == ["OFF"]


def test_the_level_turns_the_spans_off_and_on(exported: InMemorySpanExporter) -> None:
    assert tracesettings.current()["trace_level"] == ["TIMESTAMPS"]
    assert tracesettings.update({"trace_level": ["OFF"]})["trace_level"] == ["OFF"]
    with tracing.server_span("Classify", {}):
        with tracing.span("decode"):
            pass
    assert exported.get_finished_spans() == ()
    tracesettings.update({"trace_level": []})  # back to what it was: on
    with tracing.server_span("Classify", {}):
        pass
    assert [s.name for s in exported.get_finished_spans()] == ["Classify"]


def test_the_rate_is_one_trace_in_n_and_the_sampler_follows_it() -> None:
    sampler = tracing.provider("edgecascade-test", "http://127.0.0.1:9", 1.0).sampler
    ids = [random.Random(i).getrandbits(128) for i in range(2000)]  # as random trace ids

    def sampled() -> int:
        decisions = [sampler.should_sample(None, i, "Classify").decision for i in ids]
        return sum(d == Decision.RECORD_AND_SAMPLE for d in decisions)

    assert sampled() == 2000
    assert tracesettings.update({"trace_rate": ["10"]})["trace_rate"] == ["10"]
    assert tracing.ratio() == 0.1 and 100 < sampled() < 300
    assert tracesettings.update({"trace_rate": []})["trace_rate"] == ["1"]
    assert sampled() == 2000


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"trace_rate": ["0"]}, "whole number >= 1"),
        ({"trace_rate": ["ten"]}, "whole number >= 1"),
        ({"trace_rate": ["1", "2"]}, "whole number >= 1"),
        ({"trace_level": ["TENSORS"]}, "one of OFF, TIMESTAMPS"),
        ({"trace_mode": ["triton"]}, "trace_mode cannot be changed"),
        ({"trace_colour": ["red"]}, "unknown trace setting 'trace_colour'"),
        ({"trace_colour": []}, "unknown trace setting 'trace_colour'"),
        ({"trace_rate": ["5"], "trace_file": ["/tmp/t.json"]}, "trace_file cannot be changed"),
    ],
)
def test_what_the_agent_cannot_take_is_refused_and_nothing_changes(
    settings: dict[str, list[str]], words: str
) -> None:
    with pytest.raises(InvalidInput, match=words):
        tracesettings.update(settings)
    assert tracesettings.current() == {"trace_level": ["OFF"], "trace_rate": ["1"], **FIXED}
    assert tracesettings.update(FIXED) == tracesettings.current()  # shown values are accepted
