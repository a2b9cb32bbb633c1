"""The gateway secured end to end, on the real HAProxy and Triton: mutual TLS from edges (TLS
terminated by HAProxy), re-encrypted mutual TLS to a Triton whose model control is restricted to
a key, and callers from a caller file: model control only for `admin` callers, inference only
with `infer`, ModelSync only with `sync`, on gRPC and on the KServe v2 REST face alike. The two
critical holes of issue 11 (anonymous model load with a model.py, and unload, through the
gateway) are refused here."""

import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from typer.testing import CliRunner

from edgecascade.cloud.common import certs
from edgecascade.cloud.common.auth import Callers
from edgecascade.cloud.common.launcher import edgecascade_command, wait_until
from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.paths import family_dir
from edgecascade.cloud.common.ports import free_port
from edgecascade.cloud.common.transport import Tls, Transport
from edgecascade.cloud.registry.store import Registry
from edgecascade.cloud.triton.repository import write_model
from edgecascade.cloud.triton.server import ADMIN_KEY_HEADER, TritonServer
from edgecascade.edge.cli import app
from edgecascade.router.gateway.process import GatewayProcess
from edgecascade.v1 import model_sync_pb2 as sync_pb
from edgecascade.v1 import model_sync_pb2_grpc as sync_grpc
from tests.family_files import copy_family
from tests.helpers import metric
from tests.integration.test_triton_server import images, infer_input

pytestmark = pytest.mark.integration

ADMIN_KEY = "tritonAdminKey0nlyTheGatewayHas"


class Secured:
    """The certificates, tokens and processes of one secured deployment."""

    def __init__(self, folder: Path) -> None:
        self.pki = folder / "pki"
        certs.init(self.pki)
        certs.issue(self.pki, "triton")
        certs.issue(self.pki, "gateway")
        for client in ("gateway-client", "camera", "nobody"):
            certs.issue(self.pki, client, kind="client")
        certs.init(self.pki / "other")
        certs.issue(self.pki / "other", "stranger", kind="client")
        callers = Callers().with_certificate("camera", "camera", ["infer"])
        self.tokens: dict[str, str] = {}
        for name, scopes in (
            ("edge", ["infer", "status"]),
            ("watcher", ["status"]),
            ("syncer", ["sync"]),
            ("operator", ["admin", "status"]),
        ):
            callers, self.tokens[name] = callers.with_new_token(name, scopes)
        self.callers = folder / "callers.json"
        callers.save(self.callers)
        self.admin_key = folder / "admin.key"
        self.admin_key.write_text(ADMIN_KEY + "\n")

    def tls(self, name: str | None = "camera", folder: Path | None = None) -> Tls:
        where = folder or self.pki
        return Tls(
            ca=self.pki / certs.CA_CERT,
            cert=where / f"{name}.pem" if name else None,
            key=where / f"{name}.key" if name else None,
        )

    def client(self, caller: str | None, cert: str | None = "camera") -> Transport:
        """A client over mutual TLS with `cert`, sending `caller`'s token (None: none)."""
        metadata = (("authorization", f"Bearer {self.tokens[caller]}"),) if caller else ()
        return Transport(tls=self.tls(cert), metadata=metadata)

    def gateway_options(self) -> list[str]:
        pki = self.pki
        return [
            *("--tls-cert", str(pki / "gateway.pem"), "--tls-key", str(pki / "gateway.key")),
            *("--tls-ca", str(pki / certs.CA_CERT), "--require-client-cert"),
            *("--callers", str(self.callers)),
            *("--triton-ca", str(pki / certs.CA_CERT)),
            *("--triton-cert", str(pki / "gateway-client.pem")),
            *("--triton-key", str(pki / "gateway-client.key")),
            *("--triton-admin-key-file", str(self.admin_key)),
        ]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Secured:
    return Secured(tmp_path_factory.mktemp("secured"))


@pytest.fixture(scope="module")
def repository(secured: Secured, fashion_manifest: Manifest) -> Path:
    """This module's own model repository: `models publish` rolls versions out into it."""
    folder = secured.pki.parent / "repository"
    write_model(fashion_manifest, family_dir("fashion"), folder)
    return folder


@pytest.fixture(scope="module")
def triton(
    secured: Secured, repository: Path, fashion_manifest: Manifest
) -> Iterator[TritonServer]:
    pki = secured.pki
    with TritonServer(
        repository,
        model_control_mode="explicit",
        load_models=[fashion_manifest.cloud.name],
        tls=Tls(pki / certs.CA_CERT, pki / "triton.pem", pki / "triton.key", True),
        client_tls=secured.tls("gateway-client"),
        admin_key=ADMIN_KEY,
        log_path=pki.parent / "triton.log",
    ) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(
    secured: Secured, triton: TritonServer, fashion_manifest: Manifest
) -> Iterator[GatewayProcess]:
    folder = secured.pki.parent
    registry = Registry(folder / "registry")
    registry.publish("fashion", copy_family(folder / "build"))
    with GatewayProcess(
        [triton.grpc_url],
        folder / "gateway.log",
        registry=registry.root,
        http_port=free_port(),
        metrics_port=free_port(),
        options=secured.gateway_options(),
        client=secured.client("watcher"),
    ) as process:
        yield process


def refused(call, status: str, words: str, headers: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """`call(headers)` raises `status` with `words` in its message."""
    with pytest.raises(grpcclient.InferenceServerException) as caught:
        call(headers)
    assert caught.value.status() == f"StatusCode.{status}", caught.value
    assert words in caught.value.message(), caught.value


def test_inference_goes_through_mutual_tls_on_both_hops(
    secured: Secured, gateway: GatewayProcess, fashion_manifest: Manifest
) -> None:
    batch = images(fashion_manifest, 3)
    name = fashion_manifest.cloud.name
    for transport in (secured.client("edge"), secured.client(None)):  # a token, a certificate
        with transport.triton(gateway.url) as client:
            result = client.infer(name, [infer_input(batch)], headers=transport.headers)
        assert result.as_numpy("logits").shape == (3, len(fashion_manifest.labels))
    log = Path(gateway.log_path or "").read_text()
    assert not any(token in log for token in secured.tokens.values())


def test_only_the_backup_server_checks_triton_with_a_handshake(gateway: GatewayProcess) -> None:
    """Both of Triton's server lines are up; the agent-checked one by a bare connect (layer 4:
    the agent asks readiness over its own kept TLS channel), the backup by a TLS handshake
    (layer 6), as HAProxy's exporter reports their last checks."""
    url = f"http://127.0.0.1:{gateway.metrics_port}/metrics"

    def status(server: str, state: str) -> bool:
        labels = {"proxy": "triton", "server": server, "state": state}
        return metric(url, "haproxy_server_check_status", **labels) == 1

    assert wait_until(lambda: status("triton0", "L4OK") and status("triton0-live", "L6OK"), 10)
    assert metric(url, "haproxy_server_status", proxy="triton", server="triton0", state="UP") == 1


def test_model_control_needs_an_admin_caller(
    secured: Secured, gateway: GatewayProcess, triton: TritonServer, fashion_manifest: Manifest
) -> None:
    name = fashion_manifest.cloud.name
    code = {"file:1/model.py": b"import os\n"}  # Triton would run this model.py
    forged = {ADMIN_KEY_HEADER: ADMIN_KEY}  # even with Triton's key, only the caller counts
    for caller, cert, status, words in (
        (None, "nobody", "UNAUTHENTICATED", "no credentials"),
        ("edge", "camera", "PERMISSION_DENIED", "needs scope 'admin'"),
        (None, "camera", "PERMISSION_DENIED", "needs scope 'admin'"),  # a certificate caller
    ):
        transport = secured.client(caller, cert)
        headers = {**transport.headers, **forged}
        with transport.triton(gateway.url) as client:
            for call in (
                lambda h: client.load_model(name, files=code, headers=h),
                lambda h: client.load_model("evil", config='{"backend": "python"}', headers=h),
                lambda h: client.unload_model(name, headers=h),
                lambda h: client.get_model_repository_index(headers=h),
                lambda h: client.get_system_shared_memory_status(headers=h),
            ):
                refused(call, status, words, headers)
    assert triton.control.ready_versions(name) == [fashion_manifest.cloud.version]

    admin = secured.client("operator")
    with admin.triton(gateway.url) as client:
        client.unload_model(name, headers=admin.headers)
        assert triton.control.ready_versions(name) == []
        client.load_model(name, headers=admin.headers)
        index = client.get_model_repository_index(headers=admin.headers)
    assert {m.name for m in index.models if m.state == "READY"} == {name}
    assert triton.control.ready_versions(name) == [fashion_manifest.cloud.version]


def test_each_bad_caller_gets_its_own_answer(
    secured: Secured, gateway: GatewayProcess, fashion_manifest: Manifest
) -> None:
    name = fashion_manifest.cloud.name
    batch = images(fashion_manifest, 1)
    with secured.client(None, "nobody").triton(gateway.url) as client:
        cases = (
            ({}, "UNAUTHENTICATED", "no credentials"),
            ({"authorization": "Bearer " + "x" * 43}, "UNAUTHENTICATED", "not known"),
            ({"authorization": "Basic dXNlcjpwYXNz"}, "UNAUTHENTICATED", "not Bearer"),
            (
                {"authorization": f"Bearer {secured.tokens['watcher']}"},
                "PERMISSION_DENIED",
                "'infer'",
            ),
        )
        for headers, status, words in cases:
            refused(
                lambda h: client.infer(name, [infer_input(batch)], headers=h),
                status,
                words,
                headers,
            )
        watcher = {"authorization": f"Bearer {secured.tokens['watcher']}"}
        assert client.is_model_ready(name, headers=watcher)  # status scope: yes
    with Transport(tls=secured.tls("nobody")).channel(gateway.url) as channel:
        health = health_pb2_grpc.HealthStub(channel)  # open to probes: no credentials needed
        # The gateway's own answer: SERVING once its checks find Triton ready again (the test
        # before reloads the model), within a probe interval.
        serving = health_pb2.HealthCheckResponse.SERVING
        request = health_pb2.HealthCheckRequest()
        assert wait_until(lambda: health.Check(request, timeout=5).status == serving, 5)


def test_the_rest_face_checks_callers_as_grpc_does(
    secured: Secured, gateway: GatewayProcess, fashion_manifest: Manifest
) -> None:
    name = fashion_manifest.cloud.name
    url = f"127.0.0.1:{gateway.http_port}"
    tensor = httpclient.InferInput("image", [1, *fashion_manifest.cloud.input_shape], "UINT8")
    tensor.set_data_from_numpy(images(fashion_manifest, 1))
    for caller, cert in (("edge", "nobody"), (None, "camera")):  # a token, a certificate
        transport = secured.client(caller, cert)
        client = transport.triton_http(url)
        logits = client.infer(name, [tensor], headers=transport.headers).as_numpy("logits")
        assert logits.shape == (1, len(fashion_manifest.labels))
        client.close()
    for caller, cert, status, words, call in (
        (None, "nobody", "401", "not a caller", "infer"),
        ("watcher", "nobody", "403", "needs scope 'infer'", "infer"),
        ("edge", "camera", "403", "needs scope 'admin'", "index"),
    ):
        transport = secured.client(caller, cert)
        client = transport.triton_http(url)
        with pytest.raises(httpclient.InferenceServerException) as caught:
            if call == "infer":
                client.infer(name, [tensor], headers=transport.headers)
            else:
                client.get_model_repository_index(headers=transport.headers)
        assert caught.value.status() == status and words in str(caught.value), caught.value
        client.close()
    admin = secured.client("operator")
    client = admin.triton_http(url)
    index = client.get_model_repository_index(headers=admin.headers)  # Triton's key added
    client.close()
    assert {m["name"] for m in index if m.get("state") == "READY"} == {name}
    with pytest.raises(Exception):  # noqa: B017  # the REST port has the gRPC port's mutual TLS
        Transport(tls=secured.tls(None)).triton_http(url).is_server_live()


@pytest.mark.parametrize("who", ["no certificate", "another CA", "plaintext"])
def test_the_gateway_refuses_edges_without_a_certificate_from_its_ca(
    secured: Secured, gateway: GatewayProcess, who: str
) -> None:
    transport = {
        "no certificate": Transport(tls=secured.tls(None)),
        "another CA": Transport(tls=secured.tls("stranger", secured.pki / "other")),
        "plaintext": Transport(),
    }[who]
    token = {"authorization": f"Bearer {secured.tokens['edge']}"}
    with transport.triton(gateway.url) as client:
        with pytest.raises(grpcclient.InferenceServerException) as caught:
            client.is_server_live(headers=token, client_timeout=5)
    assert caught.value.status() == "StatusCode.UNAVAILABLE", caught.value


def test_model_sync_through_the_gateway_needs_the_sync_scope(
    secured: Secured, gateway: GatewayProcess
) -> None:
    request = sync_pb.GetManifestRequest(family="fashion")
    for caller, code in (("edge", grpc.StatusCode.PERMISSION_DENIED), (None, None)):
        with secured.client(caller, "nobody").channel(gateway.url) as channel:
            with pytest.raises(grpc.RpcError) as caught:
                sync_grpc.ModelSyncStub(channel).GetManifest(request, timeout=5)
            assert caught.value.code() == (code or grpc.StatusCode.UNAUTHENTICATED)
    with secured.client("syncer", "nobody").channel(gateway.url) as channel:
        reply = sync_grpc.ModelSyncStub(channel).GetManifest(request, timeout=5)
    assert reply.family == "fashion" and '"signature"' in reply.manifest_json


def test_models_publish_rolls_out_through_the_gateway_as_an_admin(
    secured: Secured,
    gateway: GatewayProcess,
    triton: TritonServer,
    repository: Path,
    fashion_manifest: Manifest,
    tmp_path: Path,
) -> None:
    pki = secured.pki
    registry = tmp_path / "registry"
    for caller in ("edge", "operator"):
        (tmp_path / caller).write_text(secured.tokens[caller] + "\n")

    def models(caller: str, *command: str) -> str:
        result = CliRunner().invoke(
            app,
            [
                *("models", *command, "--family", "fashion", "--registry", str(registry)),
                *("--triton", gateway.url, "--repository", str(repository)),
                *("--triton-ca", str(pki / certs.CA_CERT)),
                *("--triton-cert", str(pki / "camera.pem")),
                *("--triton-key", str(pki / "camera.key")),
                *("--token-file", str(tmp_path / caller)),
            ],
        )
        assert result.exit_code == (1 if caller == "edge" else 0), result.output
        return " ".join(result.output.split())

    source = str(copy_family(tmp_path / "build"))
    refused = models("edge", "publish", "--source", source)  # staged, but never current
    assert "needs scope 'admin'" in refused
    assert Registry(registry).current_version("fashion") is None
    assert "fashion v1 is current" in models("operator", "activate", "--version", "1")
    assert Registry(registry).current_version("fashion") == 1
    assert triton.control.ready_versions(fashion_manifest.cloud.name) == [
        fashion_manifest.cloud.version
    ]


@pytest.mark.parametrize(
    ("option", "words"),
    [
        ("callers", "caller file"),
        ("certificate", "TLS certificate"),
        ("key", "is not the key of certificate"),
        ("admin key", "admin key file"),
    ],
)
def test_a_file_the_gateway_cannot_use_is_one_error_line(
    secured: Secured, tmp_path: Path, option: str, words: str
) -> None:
    pki, missing = secured.pki, str(tmp_path / "missing")
    tls = ["--tls-cert", str(pki / "gateway.pem"), "--tls-key", str(pki / "gateway.key")]
    args = {
        "callers": ["--callers", missing],
        "certificate": ["--tls-cert", missing, "--tls-key", str(pki / "gateway.key")],
        "key": ["--tls-cert", str(pki / "gateway.pem"), "--tls-key", str(pki / "triton.key")],
        "admin key": [*tls, "--callers", str(secured.callers), "--triton-admin-key-file", missing],
    }[option]
    command = edgecascade_command("router", "serve", "--upstream", "127.0.0.1:1", "--port", "0")
    result = subprocess.run([*command, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and words in line, line
