"""The real Triton over mutual TLS with development certificates, and with its restricted
protocol: only a client with a certificate from Triton's CA gets an answer, and model control
without the admin key is refused by Triton itself."""

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from edgecascade.cloud.common import certs
from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.transport import PLAINTEXT, Tls, Transport
from edgecascade.cloud.triton.server import ADMIN_KEY_HEADER, TritonServer
from tests.integration.test_triton_server import images, infer_input

pytestmark = pytest.mark.integration

ADMIN_KEY = "k3yOnlyTheGatewayHas"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA with a server certificate `triton` and a client one `gateway`; a stranger's CA
    in `other/` with a client certificate `stranger`."""
    folder = tmp_path_factory.mktemp("pki")
    certs.init(folder)
    certs.issue(folder, "triton")
    certs.issue(folder, "gateway", kind="client")
    certs.init(folder / "other")
    certs.issue(folder / "other", "stranger", kind="client")
    return folder


def client_tls(pki: Path, name: str | None = "gateway", ca: Path | None = None) -> Tls:
    """TLS of a client that trusts `pki`'s CA and shows `name`'s certificate (None: none)."""
    folder = ca or pki
    return Tls(
        ca=pki / certs.CA_CERT,
        cert=folder / f"{name}.pem" if name else None,
        key=folder / f"{name}.key" if name else None,
    )


@pytest.fixture(scope="module")
def secure_triton(
    pki: Path, fashion_repository: Path, fashion_manifest: Manifest
) -> Iterator[TritonServer]:
    with TritonServer(
        fashion_repository,
        model_control_mode="explicit",
        load_models=[fashion_manifest.cloud.name],
        tls=Tls(
            ca=pki / certs.CA_CERT,
            cert=pki / "triton.pem",
            key=pki / "triton.key",
            require_client_cert=True,
        ),
        client_tls=client_tls(pki),
        admin_key=ADMIN_KEY,
        log_path=pki / "triton.log",
    ) as server:
        yield server


def test_a_client_with_a_certificate_from_its_ca_is_answered(
    secure_triton: TritonServer, pki: Path, fashion_manifest: Manifest
) -> None:
    batch = images(fashion_manifest, 2)
    with Transport(tls=client_tls(pki)).triton(secure_triton.grpc_url) as client:
        result = client.infer(fashion_manifest.cloud.name, [infer_input(batch)])
    assert result.as_numpy("logits").shape == (2, len(fashion_manifest.labels))


@pytest.mark.parametrize("who", ["no certificate", "another CA", "plaintext"])
def test_a_client_without_the_right_certificate_is_refused(
    secure_triton: TritonServer, pki: Path, who: str
) -> None:
    transport = {
        "no certificate": Transport(tls=client_tls(pki, None)),
        "another CA": Transport(tls=client_tls(pki, "stranger", ca=pki / "other")),
        "plaintext": PLAINTEXT,
    }[who]
    with transport.triton(secure_triton.grpc_url) as client:
        with pytest.raises(grpcclient.InferenceServerException) as caught:
            client.is_server_ready(client_timeout=5)
    assert caught.value.status() == "StatusCode.UNAVAILABLE", caught.value
    # ... and Triton still answers a good client.
    with Transport(tls=client_tls(pki)).triton(secure_triton.grpc_url) as client:
        assert client.is_server_ready(client_timeout=5)


def test_model_control_without_the_admin_key_is_refused_by_triton(
    secure_triton: TritonServer, pki: Path, fashion_manifest: Manifest
) -> None:
    name = fashion_manifest.cloud.name
    code = {"file:1/model.py": b"import os\n"}
    with Transport(tls=client_tls(pki)).triton(secure_triton.grpc_url) as client:
        for call in (
            lambda headers: client.load_model(name, files=code, headers=headers),
            lambda headers: client.unload_model(name, headers=headers),
            lambda headers: client.get_model_repository_index(headers=headers),
            lambda headers: client.get_system_shared_memory_status(headers=headers),
        ):
            for headers in (None, {ADMIN_KEY_HEADER: "wrong"}):
                with pytest.raises(grpcclient.InferenceServerException) as caught:
                    call(headers)
                assert "restricted" in caught.value.message(), caught.value
        assert client.is_model_ready(name)  # still served
        assert client.get_model_metadata(name).name == name  # not restricted
    # Its HTTP endpoint restricts the same protocols.
    index = urllib.request.Request(f"http://{secure_triton.http_url}/v2/repository/index", b"")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(index, timeout=5)
    assert "restricted" in refused.value.read().decode()
    # With the key (Triton's own control client sends it) control works.
    secure_triton.unload_model(name)
    assert secure_triton.control.ready_versions(name) == []
    secure_triton.load_model(name)
    assert secure_triton.control.ready_versions(name) == [fashion_manifest.cloud.version]


def test_tls_without_a_client_transport_is_refused(pki: Path, fashion_repository: Path) -> None:
    with pytest.raises(ValueError, match="client_tls"):
        TritonServer(fashion_repository, tls=client_tls(pki, "triton"))
