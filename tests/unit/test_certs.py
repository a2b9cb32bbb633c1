"""Development certificates: the CA, what it issues, and the `certs` commands."""

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from typer.testing import CliRunner

from edgecascade.cloud.common import certs
from edgecascade.cloud.common.certs_commands import app


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_ca_issues_server_and_client_certificates(tmp_path: Path) -> None:
    ca = certs.init(tmp_path / "ca")
    server = certs.issue(tmp_path / "ca", "gateway", hosts=["gateway.test", "10.0.0.7"])
    client = certs.issue(tmp_path / "ca", "edge-1", kind="client")

    assert mode(ca.key) == mode(server.key) == mode(client.key) == 0o600
    ca_cert = load(ca.cert)
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    server_cert, client_cert = load(server.cert), load(client.cert)
    server_cert.verify_directly_issued_by(ca_cert)
    client_cert.verify_directly_issued_by(ca_cert)
    names = server_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["gateway.test"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.7")]
    usage = server_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    usage = client_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    common_name = client_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert common_name == "edge-1"
    assert not server_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_server_certificates_name_the_loopback_addresses_by_default(tmp_path: Path) -> None:
    certs.init(tmp_path)
    cert = load(certs.issue(tmp_path, "agent").cert)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}


def test_a_ca_is_never_replaced_by_accident(tmp_path: Path) -> None:
    first = certs.init(tmp_path).cert.read_bytes()
    with pytest.raises(certs.CertificateError, match="already exists.*--force"):
        certs.init(tmp_path)
    assert certs.init(tmp_path, force=True).cert.read_bytes() != first


@pytest.mark.parametrize(
    ("name", "kw", "message"),
    [
        ("ca", {}, "the CA's own"),
        ("../evil", {}, "expected letters"),
        ("agent", {"days": 0}, "at least a day"),
        ("agent", {"hosts": []}, "at least one host"),
        ("agent", {"kind": "peer"}, "expected server or client"),
    ],
)
def test_certificates_that_cannot_be_issued(
    tmp_path: Path, name: str, kw: dict[str, object], message: str
) -> None:
    certs.init(tmp_path)
    with pytest.raises(certs.CertificateError, match=message):
        certs.issue(tmp_path, name, **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.key", "ca.pem"]


def test_issuing_without_a_ca_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(certs.CertificateError, match="no CA in .*certs init --dir"):
        certs.issue(tmp_path / "nowhere", "agent")


def test_certs_commands(tmp_path: Path) -> None:
    runner = CliRunner()
    folder = str(tmp_path / "ca")
    result = runner.invoke(app, ["init", "--dir", folder])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["issue", "triton", "--dir", folder, "--host", "triton.test"])
    assert result.exit_code == 0, result.output
    names = load(tmp_path / "ca" / "triton.pem").extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert names.value.get_values_for_type(x509.DNSName) == ["triton.test"]
    result = runner.invoke(app, ["issue", "edge-1", "--dir", folder, "--client"])
    assert result.exit_code == 0 and "client certificate" in result.output
    assert (tmp_path / "ca" / "edge-1.key").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["issue", "agent", "--dir", "{tmp}/missing"], "no CA in"),
        (["init", "--dir", "{tmp}/ca"], "already exists"),
        (["issue", "ca", "--dir", "{tmp}/ca"], "the CA's own"),
    ],
)
def test_certs_command_errors_are_one_line_and_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    certs.init(tmp_path / "ca")
    result = CliRunner().invoke(app, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1
