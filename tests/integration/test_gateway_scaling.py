"""The cloud tier scales: Tritons join and leave a running gateway (real HAProxy, real Tritons)
while a stream of requests at a fixed rate goes through it, and none of them fails.

Endpoints come from the gateway's upstreams file (edited by `edgecascade router upstreams`) or
from a real DNS server (dnslib) whose SRV answers the test changes."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import tritonclient.grpc as grpcclient
from dnslib import QTYPE, RCODE, RR, SRV, A, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from typer.testing import CliRunner

from edgecascade.cloud.common.launcher import wait_until
from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.ports import free_port
from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.cloud.registry.store import Registry
from edgecascade.cloud.triton.server import TritonServer
from edgecascade.edge.cli import app
from edgecascade.router.gateway.process import GatewayProcess
from edgecascade.v1 import model_sync_pb2 as sync_pb
from edgecascade.v1 import model_sync_pb2_grpc as sync_grpc
from tests.family_files import copy_family
from tests.integration.test_model_sync import recalibrate
from tests.integration.test_router_resilience import cloud_inferences, kill
from tests.integration.test_triton_server import images, infer_input
from tests.kustomize import find, rendered

pytestmark = pytest.mark.integration

RATE = 40  # requests per second, sent on a clock whatever the answers
PROBE_S = 0.1
JOIN_LIMIT_S = 2.0  # a ready replica gets traffic within this long of joining
SRV_NAME = "_grpc._tcp.triton.edgecascade.test."
ADMIN_KEY = "scaletestkey"


class Load:
    """Requests at RATE per second through `url` (open loop: each sent on time, answered
    asynchronously); every answer or error is kept."""

    def __init__(self, url: str, manifest: Manifest) -> None:
        self.client = PLAINTEXT.triton(url)
        self.manifest = manifest
        self.sent = 0
        self.errors: list[str] = []
        self.answered = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        inputs = [infer_input(images(self.manifest, 1))]
        start = time.monotonic()
        while not self._stop.is_set():
            self.client.async_infer(
                self.manifest.cloud.name, inputs, callback=self._done, client_timeout=10
            )
            self.sent += 1
            time.sleep(max(0.0, start + self.sent / RATE - time.monotonic()))

    def _done(self, result: object, error: grpcclient.InferenceServerException | None) -> None:
        with self._lock:
            self.answered += 1
            if error is not None:
                self.errors.append(str(error))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def run_for(self, seconds: float) -> None:
        time.sleep(seconds)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        assert wait_until(lambda: self.answered == self.sent, timeout_s=15), (
            f"{self.sent - self.answered} of {self.sent} requests never answered"
        )
        self.client.close()


def upstreams(*args: str) -> str:
    result = CliRunner().invoke(app, ["router", "upstreams", *args])
    assert result.exit_code == 0, result.output
    return result.output


def time_to_traffic(triton: TritonServer, manifest: Manifest, since: float) -> float:
    """Seconds from `since` until `triton` has served a request of the load."""
    before = cloud_inferences(triton, manifest)
    assert wait_until(lambda: cloud_inferences(triton, manifest) > before, JOIN_LIMIT_S + 3, 0.02)
    return time.monotonic() - since


@pytest.fixture
def tritons(fashion_repository: Path, tmp_path: Path) -> Iterator[list[TritonServer]]:
    """Three Tritons serving the fashion model, started; stopped after the test."""
    servers = [
        TritonServer(fashion_repository, log_path=tmp_path / f"triton{i}.log") for i in range(3)
    ]
    with ThreadPoolExecutor(len(servers)) as pool:  # their start and stop are mostly waiting
        try:
            list(pool.map(TritonServer.start, servers))
            yield servers
        finally:
            list(pool.map(TritonServer.stop, servers))


def file_gateway(
    tmp_path: Path, listed: list[TritonServer], *extra: str
) -> tuple[GatewayProcess, Path]:
    """A gateway following an upstreams file that lists `listed`, and the file."""
    path = tmp_path / "upstreams.txt"
    for triton in listed:
        upstreams("add", triton.grpc_url, "--file", str(path))
    options = ["--upstreams-file", str(path), "--grace", "5", *extra]
    return GatewayProcess([], tmp_path / "gateway.log", PROBE_S, options=options), path


def served(triton: TritonServer, manifest: Manifest) -> int:
    return cloud_inferences(triton, manifest)


def test_a_third_triton_joins_and_gets_traffic_within_2s_with_no_failed_request(
    tritons, fashion_manifest, tmp_path
):
    a, b, c = tritons
    gateway, path = file_gateway(tmp_path, [a, b])
    with gateway, Load(gateway.url, fashion_manifest) as load:
        load.run_for(1.0)
        assert served(c, fashion_manifest) == 0
        joined = time.monotonic()
        upstreams("add", c.grpc_url, "--file", str(path))
        elapsed = time_to_traffic(c, fashion_manifest, joined)
        load.run_for(1.0)
    print(f"\njoin: first request on the new Triton {elapsed:.2f}s after `upstreams add`")
    assert elapsed < JOIN_LIMIT_S
    assert load.errors == [] and load.sent >= RATE * 2
    assert all(served(t, fashion_manifest) > 0 for t in (a, b, c))


def test_a_listed_triton_that_turns_ready_later_gets_traffic_within_2s_of_it(
    tritons, fashion_repository, fashion_manifest, tmp_path
):
    """As a pod's record appears before its Triton listens (publishNotReadyAddresses): the
    endpoint is listed while nothing answers there, then while Triton loads its models (not
    ready under strict readiness); no request goes to it and fails meanwhile, and once it is
    ready (as seen by polling every 50 ms) it gets traffic within the join limit."""
    a, b, c = tritons
    c.stop()  # two serve the stream; the fourth comes up on ports of its own
    late = TritonServer(fashion_repository, log_path=tmp_path / "late.log")
    gateway, path = file_gateway(tmp_path, [a, b])
    try:
        with gateway, Load(gateway.url, fashion_manifest) as load:
            upstreams("add", late.grpc_url, "--file", str(path))  # nothing listens there yet
            load.run_for(1.0)
            late.start()  # returns once it and its models are ready
            ready = time.monotonic()
            assert served(late, fashion_manifest) == 0
            elapsed = time_to_traffic(late, fashion_manifest, ready)
            load.run_for(0.5)
    finally:
        late.stop()
    print(f"\nlate start: first request {elapsed:.2f}s after the Triton was seen ready")
    assert elapsed < JOIN_LIMIT_S
    assert load.errors == [], load.errors[:3]


def test_a_triton_drained_then_stopped_loses_no_request(tritons, fashion_manifest, tmp_path):
    a, b, c = tritons
    gateway, path = file_gateway(tmp_path, [a, b, c])
    with gateway, Load(gateway.url, fashion_manifest) as load:
        assert wait_until(lambda: served(c, fashion_manifest) > 0, 5)
        upstreams("remove", c.grpc_url, "--file", str(path))
        log = gateway.log_path
        assert wait_until(lambda: "drained and removed" in log.read_text(), 10), log.read_text()
        after_removal = served(c, fashion_manifest)
        c.stop()  # SIGTERM, as Kubernetes stops a pod, once the gateway has let it go
        load.run_for(1.0)
        before = served(a, fashion_manifest) + served(b, fashion_manifest)
        load.run_for(0.5)
        assert served(a, fashion_manifest) + served(b, fashion_manifest) > before
    assert load.errors == [], load.errors[:3]
    assert after_removal > 0
    text = log.read_text()
    assert text.index("leaving: draining") < text.index("drained and removed")


def pre_stop(overlay: str = "production") -> list[str]:
    """The command the kubelet runs in a Triton pod before it sends SIGTERM."""
    (triton,) = find(rendered(overlay), "StatefulSet")["spec"]["template"]["spec"]["containers"]
    command: list[str] = triton["lifecycle"]["preStop"]["exec"]["command"]
    return command


def test_a_triton_stopped_as_kubernetes_stops_a_pod_loses_no_request(
    tritons, fashion_repository, fashion_manifest, tmp_path
):
    """A scale-in: the pod's record stays while it terminates (publishNotReadyAddresses), the
    kubelet runs the manifest's preStop hook, then sends SIGTERM. Without the hook, Triton
    unloaded its models at SIGTERM before the gateway saw it not ready: 1 request of 135-171
    failed NOT_FOUND in 2 of 3 runs here."""
    a, b, c = tritons
    for spare in (b, c):  # one stays; the leaving one runs in explicit mode, as in the cluster
        spare.stop()
    leaving = TritonServer(
        fashion_repository,
        model_control_mode="explicit",
        load_models=[fashion_manifest.cloud.name],
        log_path=tmp_path / "leaving.log",
        admin_key=ADMIN_KEY,  # model control needs it, as in the cluster
    )
    gateway, _ = file_gateway(tmp_path, [a, leaving])
    with leaving, gateway, Load(gateway.url, fashion_manifest) as load:
        assert wait_until(lambda: served(leaving, fashion_manifest) >= 10, 10)
        hook = subprocess.run(
            pre_stop(),
            env={
                **os.environ,
                "TRITON_HTTP_PORT": str(leaving.http_port),
                "TRITON_ADMIN_KEY": ADMIN_KEY,
            },
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert hook.returncode == 0, hook.stderr
        assert f"Triton {leaving.grpc_url} is NOT ready" in gateway.log_path.read_text()
        drained = served(leaving, fashion_manifest)
        leaving.stop()  # SIGTERM, while the gateway still lists it
        load.run_for(1.0)
    print(f"\npreStop then SIGTERM: {len(load.errors)} failed of {load.sent}")
    assert load.errors == [], load.errors[:3]
    assert drained >= 10 and served(a, fashion_manifest) > 0


def test_a_triton_killed_mid_stream_leaves_every_request_answered(
    tritons, fashion_manifest, tmp_path
):
    a, b, c = tritons
    gateway, _ = file_gateway(tmp_path, [a, b, c])
    with gateway, Load(gateway.url, fashion_manifest) as load:
        assert wait_until(lambda: served(c, fashion_manifest) >= 10, 10)  # c in the rotation
        kill(c)
        sent_at_kill = load.sent
        load.run_for(1.5)
    print(f"\nSIGKILL: {len(load.errors)} failed of {load.sent} ({sent_at_kill} before the kill)")
    assert load.answered == load.sent  # every request answered...
    assert load.errors == [], load.errors[:3]  # ...by a Triton: HAProxy retried the lost ones


class Zone(BaseResolver):
    """A DNS zone with one SRV name whose targets (all 127.0.0.1, each with its port) the test
    sets; anything else is NXDOMAIN."""

    def __init__(self) -> None:
        self.targets: dict[str, int] = {}  # target name -> port

    def point_at(self, tritons: list[TritonServer]) -> None:
        self.targets = {f"t{t.grpc_port}.edgecascade.test.": t.grpc_port for t in tritons}

    def resolve(self, request: DNSRecord, handler: object) -> DNSRecord:
        reply = request.reply()
        name, kind = str(request.q.qname), QTYPE[request.q.qtype]
        targets = dict(self.targets)
        if name == SRV_NAME and kind == "SRV" and targets:
            for target, port in targets.items():
                reply.add_answer(RR(name, QTYPE.SRV, rdata=SRV(0, 10, port, target), ttl=1))
        elif name in targets and kind == "A":
            reply.add_answer(RR(name, QTYPE.A, rdata=A("127.0.0.1"), ttl=1))
        else:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


@pytest.fixture
def zone() -> Iterator[tuple[Zone, int]]:
    """The zone served by a real DNS server on a loopback UDP port."""
    zone = Zone()
    port = free_port()
    quiet = DNSLogger(logf=lambda line: None)
    server = DNSServer(zone, port=port, address="127.0.0.1", logger=quiet)
    server.start_thread()
    try:
        yield zone, port
    finally:
        server.stop()


def test_the_gateway_follows_dns_answers_with_no_failed_request(
    tritons, zone, fashion_manifest, tmp_path
):
    (records, port), (a, b, c) = zone, tritons
    records.point_at([a, b])
    options = ["--discover", SRV_NAME, "--dns-server", f"127.0.0.1:{port}"]
    gateway = GatewayProcess([], tmp_path / "gateway.log", PROBE_S, options=options)
    with gateway, Load(gateway.url, fashion_manifest) as load:
        load.run_for(0.5)
        records.point_at([a, b, c])  # a replica scheduled: its pod's record appears
        elapsed = time_to_traffic(c, fashion_manifest, time.monotonic())
        records.point_at([b, c])  # one scaled in: its record goes, the gateway drains it
        log = gateway.log_path
        assert wait_until(lambda: "drained and removed" in log.read_text(), 10)
        gone = served(a, fashion_manifest)
        load.run_for(1.0)
        assert served(a, fashion_manifest) == gone  # no request after it left
    print(f"\nDNS: first request on the new Triton {elapsed:.2f}s after its record appeared")
    assert elapsed < JOIN_LIMIT_S
    assert load.errors == [], load.errors[:3]
    assert served(c, fashion_manifest) > 0


def test_a_gateway_with_no_ready_triton_reports_not_ready(tritons, fashion_manifest, tmp_path):
    a = tritons[0]
    health_port = free_port()
    gateway, path = file_gateway(tmp_path, [a], "--health-port", str(health_port))
    with gateway:
        assert wait_until(lambda: status(gateway.url) == "SERVING", 5)
        assert status(f"127.0.0.1:{health_port}") == "SERVING"  # the probes' plaintext port
        with PLAINTEXT.triton(f"127.0.0.1:{health_port}") as client:  # ... serves health only
            with pytest.raises(grpcclient.InferenceServerException, match="UNIMPLEMENTED"):
                client.is_server_live(client_timeout=5)
        for url in (gateway.url, f"127.0.0.1:{health_port}"):  # a service it does not have
            with pytest.raises(grpc.RpcError) as unknown:
                status(url, "no.such.Service")
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND, url
        upstreams("remove", a.grpc_url, "--file", str(path))
        assert wait_until(lambda: status(gateway.url) == "NOT_SERVING", 5)
        assert status(f"127.0.0.1:{health_port}") == "NOT_SERVING"
        upstreams("add", a.grpc_url, "--file", str(path))
        assert wait_until(lambda: status(gateway.url) == "SERVING", 5)
        a.stop()  # listed, but gone
        assert wait_until(lambda: status(gateway.url) == "NOT_SERVING", 5)


def status(url: str, service: str = "") -> str:
    with PLAINTEXT.channel(url) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def test_a_leaving_triton_finishes_what_is_in_flight_before_it_is_removed(
    tritons, fashion_manifest, tmp_path
):
    """A ModelStreamInfer stream open on a Triton that leaves goes on being answered while the
    gateway drains it, and only once it closes is the Triton removed."""
    a, b, _ = tritons
    gateway, path = file_gateway(tmp_path, [a])
    batch = images(fashion_manifest, 1)
    answers: list[str | None] = []
    with gateway, PLAINTEXT.triton(gateway.url) as client:
        client.start_stream(lambda result, error: answers.append(error and str(error)))
        upstreams("add", b.grpc_url, "--file", str(path))  # where the others go meanwhile
        upstreams("remove", a.grpc_url, "--file", str(path))
        log = gateway.log_path
        assert wait_until(lambda: "leaving: draining" in log.read_text(), 5)
        for _ in range(10):  # the stream stays on a, draining
            client.async_stream_infer(fashion_manifest.cloud.name, [infer_input(batch)])
            time.sleep(0.1)
        assert wait_until(lambda: len(answers) == 10, 5)
        assert "drained and removed" not in log.read_text()
        client.stop_stream()
        assert wait_until(lambda: "drained and removed" in log.read_text(), 5)
    assert answers == [None] * 10
    assert served(a, fashion_manifest) == 10  # all on the stream's Triton


def test_gateways_sharing_a_file_and_a_registry_are_interchangeable(
    tritons, fashion_manifest, tmp_path
):
    """Two gateways behind one name (a Service): the same upstreams file, the same registry;
    a publication and a joining Triton reach both."""
    a, b, _ = tritons
    registry = Registry(tmp_path / "registry")
    registry.publish("fashion", copy_family(tmp_path / "build"))
    path = tmp_path / "upstreams.txt"
    upstreams("add", a.grpc_url, "--file", str(path))
    options = ["--upstreams-file", str(path)]
    gateways = [
        GatewayProcess([], tmp_path / f"gateway{i}.log", PROBE_S, registry.root, options=options)
        for i in range(2)
    ]
    with gateways[0] as one, gateways[1] as other:
        manifests = {manifest_json(g.url) for g in (one, other)}
        assert len(manifests) == 1  # the same current version from either
        build = copy_family(tmp_path / "build2")
        recalibrate(build, 0.5)
        registry.publish("fashion", build)  # a new version: its policy changed
        assert wait_until(lambda: {manifest_json(g.url) for g in (one, other)} != manifests, 5)
        assert len({manifest_json(g.url) for g in (one, other)}) == 1
        upstreams("add", b.grpc_url, "--file", str(path))
        for gateway in (one, other):  # each one sends b requests within the join limit
            assert sends_requests_to(gateway.url, b, fashion_manifest, JOIN_LIMIT_S)


def sends_requests_to(url: str, triton: TritonServer, manifest: Manifest, timeout_s: float) -> bool:
    """Whether requests through the gateway at `url` reach `triton` within `timeout_s`."""
    before = served(triton, manifest)
    batch = [infer_input(images(manifest, 1))]
    with PLAINTEXT.triton(url) as client:

        def reached() -> bool:
            client.infer(manifest.cloud.name, batch)
            return served(triton, manifest) > before

        return wait_until(reached, timeout_s)


def manifest_json(url: str) -> str:
    with PLAINTEXT.channel(url) as channel:
        request = sync_pb.GetManifestRequest(family="fashion")
        return sync_grpc.ModelSyncStub(channel).GetManifest(request, timeout=5).manifest_json
