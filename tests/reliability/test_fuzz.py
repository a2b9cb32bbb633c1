"""Property-based fuzzing of every RPC an edge agent serves (Classify, ClassifyStream, ModelInfer,
ModelStreamInfer) with hypothesis, each example sent to an agent with a cloud or to one without
(every escalation degraded): whatever comes in, the answer is a result or a status that is the
caller's to act on, never UNKNOWN or INTERNAL, and a bad frame never ends its stream.

EDGECASCADE_FUZZ_EXAMPLES sets the examples per API (`make reliability`: 10,000; unset, as in
`make test`: a few, drawn the same way on every run)."""

import os
import time
from collections.abc import Iterator

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as kpb
from tritonclient.grpc import service_pb2_grpc as kpb_grpc

from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc
from tests.reliability.report import Report, agent_figures
from tests.reliability.strategies import Drawn, classify_request, model_infer_request

EXAMPLES_VARIABLE = "EDGECASCADE_FUZZ_EXAMPLES"
EXAMPLES = int(os.environ.get(EXAMPLES_VARIABLE, "25"))
# pytest-timeout's limit is per test, and a test here is every example of its API.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600 + EXAMPLES * 0.5)]
NEVER = {"UNKNOWN", "INTERNAL"}  # a bug's codes, or grpc's when a handler lets one out
CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
TIMEOUT_S = 30.0

fuzzing = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=EXAMPLES_VARIABLE not in os.environ,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
frames = st.lists(classify_request(), min_size=1, max_size=8)
requests = st.lists(model_infer_request(), min_size=1, max_size=6)


AGENTS = st.sampled_from(["with-cloud", "edge-only"])  # each example goes to one of them


@pytest.fixture(scope="module")
def channels(agent, edge_only, bystander) -> Iterator[dict[str, grpc.Channel]]:
    """Channels to both agents, while a bystander calls the first (conftest.bystander)."""
    with (
        PLAINTEXT.channel(agent.address) as cloud,
        PLAINTEXT.channel(edge_only.address) as alone,
    ):
        yield {"with-cloud": cloud, "edge-only": alone}


@pytest.fixture(autouse=True)
def timed(request: pytest.FixtureRequest, report: Report) -> Iterator[None]:
    """When each API's examples ran (Unix times), to set the bystander's slow calls against."""
    started = time.time()
    yield
    report.figures.setdefault("ran", {})[request.node.name] = [
        round(started, 2),
        round(time.time(), 2),
    ]


def code_of(call) -> str:
    try:
        call()
    except grpc.RpcError as e:
        return e.code().name
    return "OK"


@fuzzing
@given(drawn=classify_request(), to=AGENTS)
def test_classify(channels, report: Report, drawn: Drawn, to: str) -> None:
    classes, request = drawn
    stub = pb_grpc.CascadeStub(channels[to])
    sent = time.time()
    code = code_of(lambda: stub.Classify(request, timeout=TIMEOUT_S))
    report.add("Classify", [*classes, to], code, sent)
    assert code not in NEVER, (classes, request)


@fuzzing
@given(drawn=frames, to=AGENTS)
def test_classify_stream(channels, report: Report, drawn: list[Drawn], to: str) -> None:
    messages = [request for _, request in drawn]
    sent = time.time()
    responses = pb_grpc.CascadeStub(channels[to]).ClassifyStream(iter(messages), timeout=TIMEOUT_S)
    answers = list(responses)  # a stream ended by an error raises here
    assert len(answers) == len(messages), "the stream ended before every frame was answered"
    for (classes, request), answer in zip(drawn, answers):
        code = CODE_NAMES[answer.error.code]
        report.add("ClassifyStream", [*classes, to], code, sent)
        assert code not in NEVER, (classes, request, answer.error.message)


@fuzzing
@given(drawn=model_infer_request(), to=AGENTS)
def test_model_infer(channels, report: Report, drawn: Drawn, to: str) -> None:
    classes, request = drawn
    stub = kpb_grpc.GRPCInferenceServiceStub(channels[to])
    sent = time.time()
    code = code_of(lambda: stub.ModelInfer(request, timeout=TIMEOUT_S))
    report.add("ModelInfer", [*classes, to], code, sent)
    assert code not in NEVER, (classes, request)


@fuzzing
@given(drawn=requests, to=AGENTS)
def test_model_stream_infer(channels, report: Report, drawn: list[Drawn], to: str) -> None:
    messages: list[kpb.ModelInferRequest] = [request for _, request in drawn]
    sent = time.time()
    responses = kpb_grpc.GRPCInferenceServiceStub(channels[to]).ModelStreamInfer(
        iter(messages), timeout=TIMEOUT_S
    )
    answers = list(responses)
    assert len(answers) == len(messages), "the stream ended before every request was answered"
    for (classes, request), answer in zip(drawn, answers):
        code = answer.error_message.split(":")[0] if answer.error_message else "OK"
        report.add("ModelStreamInfer", [*classes, to], code, sent)
        assert code not in NEVER, (classes, request, answer.error_message)


def test_the_agent_kept_its_memory_through_the_fuzzing(agent, bystander, report: Report) -> None:
    """Runs after the APIs' examples: the agent's RSS within 10% of what it was after its warm-up
    (checked once there were 1,000 examples per API or more; always reported)."""
    after = agent_figures(agent)
    report.figures["agent_after_fuzzing"] = after
    before = report.figures["agent_before"]
    growth = after["rss_bytes"] / before["rss_bytes"] - 1
    report.figures["rss_growth"] = round(growth, 4)
    assert set(report.inputs) == {"Classify", "ClassifyStream", "ModelInfer", "ModelStreamInfer"}
    if EXAMPLES >= 1000:
        assert growth <= 0.10, (before, after)
