"""Audit, budget and collection on a real edge agent escalating to a real Triton over gRPC.

- Audits of confident answers give the agreement with the cloud (Wilson interval) per family and
  edge version in GetStatus, the metrics and `edgecascade status`, with a warning below the bound.
- Over its escalation budget the agent answers at the edge, degraded `budget`, until it refills.
- The collected examples keep their cap and survive a kill -9 of the agent; restarted, it goes on
  with the same store. Collection off keeps nothing.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from edgecascade.cloud.common.examples import ExampleStore
from edgecascade.cloud.common.launcher import edgecascade_command, wait_until
from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.edge.tools.process import EdgeProcess
from edgecascade.v1 import cascade_pb2 as pb
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc
from tests.helpers import Agent, classify, metric, start_agent

pytestmark = pytest.mark.integration
EXAMPLE_BYTES = 28 * 28 + 2 * 10 * 4  # a fashion example in the store


@contextmanager
def stopping(agent: Agent) -> Iterator[Agent]:
    try:
        yield agent
    finally:
        agent.process.stop()


def status(address: str) -> pb.GetStatusResponse:
    with PLAINTEXT.channel(address) as channel:
        return pb_grpc.CascadeStub(channel).GetStatus(pb.GetStatusRequest(), timeout=5)


def test_audited_agreement_is_in_status_metrics_and_the_cli_with_a_warning(
    triton, frames, fashion_manifest, tmp_path: Path
) -> None:
    # threshold 0: every answer stays at the edge, so some of the audited disagree with the cloud
    agent = start_agent(
        tmp_path, triton.grpc_url, "--audit-rate", "1", "--audit-min-agreement", "1",
        "--threshold", "0",
    )  # fmt: skip
    with stopping(agent), PLAINTEXT.channel(agent.address) as channel:
        stub = pb_grpc.CascadeStub(channel)
        confident = sum(classify(stub, f).tier == pb.EDGE for f in frames[:300])
        seen: list[int] = []  # audited counts, until the audits in flight are done

        def settled() -> bool:
            audit = status(agent.address).audit
            seen.append(audit[0].audited if audit else -1)
            return len(seen) > 2 and seen[-1] == seen[-2] == seen[-3] >= 0

        assert wait_until(settled, 10)
        entry = status(agent.address).audit[0]
        assert entry.family == "fashion" and entry.edge_version == fashion_manifest.edge.key
        assert 0 < entry.audited <= confident and entry.agreed < entry.audited
        assert entry.lower < entry.agreement == entry.agreed / entry.audited < entry.upper < 1
        assert entry.below_bound  # the bound is 100%: any disagreement is below it
        # nothing escalated at threshold 0: what went to the cloud is the audits' images
        per_image = int(np.prod(fashion_manifest.cloud.preprocessing.shape))
        assert status(agent.address).bytes_to_cloud == entry.audited * per_image > 0
        labels = {"family": "fashion", "edge": fashion_manifest.edge.key}
        url = agent.metrics_url
        assert metric(url, "edgecascade_audited_total", **labels) == entry.audited
        lower = metric(url, "edgecascade_audit_agreement", **labels, bound="lower")
        assert lower == pytest.approx(entry.lower)
        command = edgecascade_command("status", "--agent", agent.address, "--insecure")
        wide = {**os.environ, "COLUMNS": "400"}
        shown = subprocess.run(command, capture_output=True, text=True, timeout=30, env=wide)
        assert shown.returncode == 0, shown.stderr
        assert "WARNING audit fashion_edge:1" in shown.stdout and "below the bound" in shown.stdout
        listed = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=30)
        (audited,) = json.loads(listed.stdout)[0]["audit"]
        assert audited["below_bound"] and audited["audited"] == entry.audited
        log = (tmp_path / "edge.log").read_text()
        assert "below the bound 100.0%" in log and log.count("audit: fashion") == 1


def test_over_budget_answers_are_degraded_budget_until_the_bucket_refills(
    triton, frames, fashion_manifest, tmp_path: Path
) -> None:
    agent = start_agent(
        tmp_path, triton.grpc_url, "--escalations-per-second", "1", "--escalation-burst", "2"
    )
    with stopping(agent), PLAINTEXT.channel(agent.address) as channel:
        stub = pb_grpc.CascadeStub(channel)
        answers = [classify(stub, f) for f in frames[:300]]
        unsure = [a for a in answers if a.edge_confidence < fashion_manifest.policy.threshold]
        assert len(unsure) > 10
        in_budget = [a for a in unsure if a.tier == pb.CLOUD]
        over = [a for a in unsure if a.degraded]
        assert 2 <= len(in_budget) < len(unsure) / 2  # the burst, and a little refill
        assert over and all(a.degraded_reason_code == pb.BUDGET for a in over)
        assert all(a.degraded_reason == "budget" and a.tier == pb.EDGE for a in over)
        assert metric(agent.metrics_url, "edgecascade_degraded_total", reason="budget") == len(over)
        time.sleep(2.1)  # refilled to the burst
        again = [classify(stub, frames[answers.index(a)]) for a in unsure[:2]]
        assert [a.tier for a in again] == [pb.CLOUD, pb.CLOUD]


def test_the_store_keeps_its_cap_and_survives_a_kill_9_of_the_agent(
    triton, frames, tmp_path: Path
) -> None:
    path, cap = tmp_path / "examples.sqlite", 10 * EXAMPLE_BYTES
    args = ("--examples-file", str(path), "--examples-max-bytes", str(cap))

    def escalate(address: str, batch: list) -> int:
        with PLAINTEXT.channel(address) as channel:
            stub = pb_grpc.CascadeStub(channel)
            return sum(classify(stub, f).tier == pb.CLOUD for f in batch)

    with EdgeProcess("fashion", triton.grpc_url, tmp_path / "edge.log", *args) as edge:
        assert escalate(edge.address, frames[:150]) > 10
        store = ExampleStore(path, cap)
        assert wait_until(lambda: len(store) == 10, 10)
        before = {e.sha256 for e in store.examples()}
        store.close()
        os.kill(edge.pid, signal.SIGKILL)
        assert edge.wait(10) == -signal.SIGKILL
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    store = ExampleStore(path, cap)
    assert {e.sha256 for e in store.examples()} == before and store.size_bytes() <= cap
    store.close()
    with EdgeProcess("fashion", triton.grpc_url, tmp_path / "edge2.log", *args) as edge:
        assert escalate(edge.address, frames[150:]) > 10
        store = ExampleStore(path, cap)
        assert wait_until(lambda: not before & {e.sha256 for e in store.examples()}, 10)
        assert len(store) == 10 and store.size_bytes() <= cap


def test_collection_off_keeps_nothing(triton, frames, tmp_path: Path) -> None:
    path = tmp_path / "examples.sqlite"
    args = ("--no-collect", "--examples-file", str(path), "--audit-rate", "1")
    with (
        EdgeProcess("fashion", triton.grpc_url, tmp_path / "edge.log", *args) as edge,
        PLAINTEXT.channel(edge.address) as channel,
    ):
        stub = pb_grpc.CascadeStub(channel)
        assert sum(classify(stub, f).tier == pb.CLOUD for f in frames[:100]) > 0
        assert wait_until(lambda: status(edge.address).audit, 10)  # the cloud answered audits
        time.sleep(0.5)
    assert not path.exists() and not list(tmp_path.glob("*.sqlite*"))


def test_a_graceful_stop_keeps_every_example_still_queued(triton, frames, tmp_path: Path) -> None:
    """The agent stops at once after its last answer: what the collector had queued is written
    before the store closes (one example per distinct escalated image)."""
    path = tmp_path / "examples.sqlite"
    args = ("--examples-file", str(path))
    with (
        EdgeProcess("fashion", triton.grpc_url, tmp_path / "edge.log", *args) as edge,
        PLAINTEXT.channel(edge.address) as channel,
    ):
        stub = pb_grpc.CascadeStub(channel)
        escalated = {f.encoded for f in frames[:200] if classify(stub, f).tier == pb.CLOUD}
    assert len(escalated) > 10
    store = ExampleStore(path, 2**30)
    assert len(store) == len(escalated)
    store.close()
