"""A Triton stalled for 3 s (SIGSTOP, then SIGCONT) under a 50 fps camera stream and unary calls
with a 0.3 s gRPC deadline: no call fails, and escalation is back within a second of SIGCONT
(issue 12, item 4: it used to take 27-29 s, and some unary calls got DEADLINE_EXCEEDED).

The stall is run on a Triton of its own, and SIGSTOP stops the tritonserver process, not the
python backend's stub that runs the model: stopping both at once aborted Triton after SIGCONT in
1 of 4 runs here (boost::interprocess::lock_exception in the python backend: a lock on the shared
memory between them timed out while both were stopped). Should Triton still die of a signal, the
run says so and the stall is run once more on a fresh Triton: the agent's behaviour is asserted
on a run where Triton lived."""

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.cloud.triton.server import TritonServer
from edgecascade.edge.tools.process import EdgeProcess
from edgecascade.edge.tools.samples import Frame
from edgecascade.v1 import cascade_pb2 as pb
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc
from tests.helpers import classify
from tests.traffic import Outcome, Traffic

pytestmark = pytest.mark.integration

STALL_S = 3.0
AFTER_S = 3.0
RECOVERY_S = 1.0
ATTEMPTS = 2  # a second one only after Triton died of a signal (see above)


@dataclass
class Stall:
    outcomes: list[Outcome]  # the stream's frames and the unary calls
    status: pb.GetStatusResponse  # GetStatus while Triton was stopped
    stopped_at: float
    resumed_at: float


def stall(triton: TritonServer, frames: list[Frame], edge_log: Path) -> Stall:
    """A camera stream and unary calls through an agent escalating everything to `triton`,
    which is stopped for STALL_S, then left running for AFTER_S."""
    with (
        EdgeProcess("fashion", triton.grpc_url, edge_log, "--threshold", "1.0") as edge,
        PLAINTEXT.channel(edge.address) as channel,
    ):
        stub = pb_grpc.CascadeStub(channel)
        assert classify(stub, frames[0]).tier == pb.CLOUD
        traffic = Traffic(channel, frames, deadline_s=0.3).start()
        stopped = False
        assert triton.pid is not None
        try:
            time.sleep(1.0)
            os.kill(triton.pid, signal.SIGSTOP)
            stopped = True
            stopped_at = time.perf_counter()
            time.sleep(STALL_S - 1.0)
            status = stub.GetStatus(pb.GetStatusRequest(), timeout=5)
            time.sleep(1.0)
        finally:
            if stopped:
                os.kill(triton.pid, signal.SIGCONT)
            resumed_at = time.perf_counter()
            time.sleep(AFTER_S)
            outcomes = traffic.stop()
    return Stall(outcomes, status, stopped_at, resumed_at)


def test_escalation_is_back_within_a_second_of_a_stalled_triton_resuming(
    fashion_repository: Path, frames: list[Frame], tmp_path: Path
) -> None:
    for attempt in range(1, ATTEMPTS + 1):
        log = tmp_path / f"triton-{attempt}.log"
        with TritonServer(fashion_repository, log_path=log) as triton:
            run = stall(triton, frames, tmp_path / f"edge-{attempt}.log")
            died = None if triton.is_running() else triton.returncode
            tail = triton.log_tail(15)
        if died is None:
            break
        print(f"\nattempt {attempt}: Triton died after SIGCONT (exit {died}):\n{tail}")
        assert died < 0, f"Triton exited with {died}, not of a signal:\n{tail}"
    assert died is None, f"Triton died in each of {ATTEMPTS} stalls"
    # While every call timed out, the agent did not call the cloud ready.
    assert not run.status.cloud_ready and run.status.breaker != "closed", run.status
    outcomes = run.outcomes
    failed = [o.failure for o in outcomes if o.failure]
    when = [f"{o.failure} {o.at - run.resumed_at:+.2f}s" for o in outcomes if o.failure]
    assert failed == [], f"{len(failed)} of {len(outcomes)} calls failed (after SIGCONT): {when}"
    during = [o for o in outcomes if run.stopped_at + RECOVERY_S < o.at < run.resumed_at]
    assert during and all(o.tier == pb.EDGE for o in during)  # degraded, answered
    back = min(o.at for o in outcomes if o.at > run.resumed_at and o.tier == pb.CLOUD)
    late = [o for o in outcomes if o.at > run.resumed_at + RECOVERY_S and o.tier != pb.CLOUD]
    print(
        f"\nescalation back {back - run.resumed_at:.3f}s after SIGCONT; {len(outcomes)} "
        f"frames and unary calls, {len(failed)} failed"
    )
    assert back - run.resumed_at < RECOVERY_S
    assert late == [], f"{len(late)} answers at the edge more than {RECOVERY_S}s after SIGCONT"
