"""Streams within their window are back-pressured, not refused, while max_in_flight still turns
unary calls away (issue 12, item 5: 8 and 16 pipelined streams got 287 of 2,400 and 2,212 of
4,800 frames RESOURCE_EXHAUSTED); bad numbers are INVALID_ARGUMENT, and in a stream they cost
their own frame only (item 7)."""

import math
import threading
from collections import Counter
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as kpb
from tritonclient.grpc import service_pb2_grpc as kpb_grpc
from tritonclient.utils import serialize_byte_tensor

from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.edge.tools.process import EdgeProcess
from edgecascade.edge.tools.samples import Frame
from edgecascade.v1 import cascade_pb2 as pb
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

FRAMES = 150  # per stream
CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


@pytest.fixture(scope="module")
def agent(triton, fashion_manifest, tmp_path_factory) -> Iterator[EdgeProcess]:
    """Every frame escalated to the session's Triton, so frames stay in flight a while."""
    log = tmp_path_factory.mktemp("edge") / "edge.log"
    with EdgeProcess("fashion", triton.grpc_url, log, "--threshold", "1.0") as edge:
        yield edge


def kserve_request(frame: Frame, i: int) -> kpb.ModelInferRequest:
    request = kpb.ModelInferRequest(model_name="fashion", id=str(i))
    request.inputs.add(name="image", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(
        serialize_byte_tensor(np.array([frame.encoded], object)).item()
    )
    return request


def cascade_stream(channel: grpc.Channel, frames: list[Frame]) -> list[str]:
    """One pipelined ClassifyStream (frames sent as fast as the agent reads them): each
    answer's error code, "OK" when answered."""
    requests = (
        pb.ClassifyRequest(encoded_image=frames[i % len(frames)].encoded) for i in range(FRAMES)
    )
    responses = pb_grpc.CascadeStub(channel).ClassifyStream(requests, timeout=120)
    return [CODE_NAMES[r.error.code] for r in responses]


def kserve_stream(channel: grpc.Channel, frames: list[Frame]) -> list[str]:
    requests = (kserve_request(frames[i % len(frames)], i) for i in range(FRAMES))
    responses = kpb_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(requests, timeout=120)
    return [r.error_message.split(":")[0] or "OK" for r in responses]


def pipelined(address: str, streams: int, run, frames: list[Frame]) -> Counter[str]:
    """`streams` streams at once over one channel: their answers' codes counted."""
    codes: Counter[str] = Counter()
    with PLAINTEXT.channel(address) as channel:

        def one() -> None:
            codes.update(run(channel, frames))

        threads = [threading.Thread(target=one) for _ in range(streams)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(180)
    return codes


@pytest.mark.parametrize("streams", [8, 16])
@pytest.mark.parametrize("run", [cascade_stream, kserve_stream], ids=["ClassifyStream", "KServe"])
def test_pipelined_streams_within_their_window_are_never_refused(agent, frames, streams, run):
    codes = pipelined(agent.address, streams, run, frames)
    print(f"\n{streams} streams: {dict(codes)}")
    assert codes == {"OK": streams * FRAMES}


def test_max_in_flight_still_refuses_unary_calls_while_streams_wait(triton, frames, tmp_path):
    with EdgeProcess(
        "fashion",
        triton.grpc_url,
        tmp_path / "edge.log",
        "--threshold",
        "1.0",
        "--max-in-flight",
        "2",
    ) as edge:
        refused = 0
        streamed: Counter[str] = Counter()

        def streams() -> None:
            streamed.update(pipelined(edge.address, 4, cascade_stream, frames))

        worker = threading.Thread(target=streams)
        worker.start()
        with PLAINTEXT.channel(edge.address) as channel:
            stub = pb_grpc.CascadeStub(channel)
            while worker.is_alive():
                futures = [
                    stub.Classify.future(pb.ClassifyRequest(encoded_image=f.encoded), timeout=10)
                    for f in frames[:8]
                ]
                for future in futures:
                    try:
                        future.result()
                    except grpc.RpcError as e:
                        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
                        assert "max_in_flight" in e.details()
                        refused += 1
        worker.join()
        assert streamed == {"OK": 4 * FRAMES}
        assert refused > 0


@pytest.mark.parametrize("budget", [math.nan, math.inf, -math.inf, -5.0])
def test_a_budget_that_is_not_a_number_of_ms_is_invalid_and_costs_its_frame_only(
    agent, frames, budget
):
    with PLAINTEXT.channel(agent.address) as channel:
        stub = pb_grpc.CascadeStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.Classify(
                pb.ClassifyRequest(encoded_image=frames[0].encoded, deadline_ms=budget), timeout=10
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "deadline_ms must be a finite number" in err.value.details()
        requests = [
            pb.ClassifyRequest(
                request_id=str(i), encoded_image=f.encoded, deadline_ms=budget if i == 1 else 0
            )
            for i, f in enumerate(frames[:4])
        ]
        answers = list(stub.ClassifyStream(iter(requests), timeout=30))
        assert [a.request_id for a in answers] == ["0", "1", "2", "3"]
        assert [a.error.code for a in answers] == [
            0,
            grpc.StatusCode.INVALID_ARGUMENT.value[0],
            0,
            0,
        ]


def test_kserve_extra_contents_and_a_string_class_count_are_invalid_in_a_stream_too(agent, frames):
    extra = kserve_request(frames[0], 1)
    extra.raw_input_contents.append(b"junk")
    text_count = kserve_request(frames[0], 2)
    text_count.outputs.add(name="probabilities").parameters["classification"].string_param = "3"
    with PLAINTEXT.channel(agent.address) as channel:
        stub = kpb_grpc.GRPCInferenceServiceStub(channel)
        for bad, says in ((extra, "raw_input_contents"), (text_count, "'classification'")):
            with pytest.raises(grpc.RpcError) as err:
                stub.ModelInfer(bad, timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert says in err.value.details()
        requests = [kserve_request(frames[0], 0), extra, text_count, kserve_request(frames[1], 3)]
        answers = list(stub.ModelStreamInfer(iter(requests), timeout=30))
        assert [a.infer_response.id for a in answers] == ["0", "1", "2", "3"]
        assert [a.error_message.split(":")[0] for a in answers] == [
            "",
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
            "",
        ]
