"""Certificates for development: a local certificate authority and the certificates it issues.

`init(folder)` makes the CA (`ca.pem`, `ca.key`); `issue(folder, name, ...)` writes
`<name>.pem` and `<name>.key` next to it, signed by that CA. Keys are EC P-256 (cheap
handshakes) and written 0600; every file is replaced atomically, so a server that rereads its
certificate files (see transport.Tls) never sees half of one.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgecascade.cloud.common.manifest import plain_name

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
# Names a server on this machine is reached by.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
# Clocks of two machines differ a little: a certificate is valid from slightly before it is made.
CLOCK_SKEW = timedelta(minutes=5)

Kind = Literal["server", "client"]


class CertificateError(ValueError):
    """A CA or certificate cannot be made as asked; the message says what to do."""


@dataclass(frozen=True)
class Issued:
    """The files of one certificate: its PEM chain and its private key."""

    cert: Path
    key: Path


def init(
    folder: Path, name: str = "edgecascade development CA", days: int = 3650, force: bool = False
) -> Issued:
    """Create a CA in `folder` (made if missing); CertificateError if one is there already,
    unless `force` (every certificate it issued before then stops being trusted)."""
    folder = Path(folder)
    ca = Issued(folder / CA_CERT, folder / CA_KEY)
    if not force and (ca.cert.exists() or ca.key.exists()):
        raise CertificateError(
            f"a CA already exists in {folder} (--force replaces it and every certificate it "
            "issued stops being trusted)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        _builder(subject, subject, key.public_key(), now, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(ca, key, cert)
    return ca


def issue(
    folder: Path,
    name: str,
    hosts: Sequence[str] = LOOPBACK_HOSTS,
    kind: Kind = "server",
    days: int = 825,
    now: datetime | None = None,
) -> Issued:
    """Issue a `kind` certificate for `name` (its common name: the caller's identity for a
    client) signed by the CA in `folder`, valid for `days` from `now`; a server certificate
    names `hosts` (DNS names or IP addresses) as subject alternative names."""
    try:
        plain_name("certificate name", name)
    except ValueError as e:
        raise CertificateError(str(e)) from None
    if Path(CA_CERT).stem == name:
        raise CertificateError(f"certificate name {name!r} is the CA's own")
    if kind not in ("server", "client"):
        raise CertificateError(f"certificate kind {kind!r}: expected server or client")
    if days < 1:
        raise CertificateError(f"--days {days}: a certificate must be valid for at least a day")
    if kind == "server" and not hosts:
        raise CertificateError("a server certificate needs at least one host name or address")
    ca_cert, ca_key = load_ca(folder)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    usage = ExtendedKeyUsageOID.SERVER_AUTH if kind == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        _builder(subject, ca_cert.subject, key.public_key(), now or datetime.now(UTC), days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if kind == "server":
        names = [_general_name(host) for host in hosts]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    issued = Issued(Path(folder) / f"{name}.pem", Path(folder) / f"{name}.key")
    _write(issued, key, builder.sign(ca_key, hashes.SHA256()))
    return issued


def load_ca(folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA certificate and key in `folder`; CertificateError saying how to make one."""
    folder = Path(folder)
    paths = Issued(folder / CA_CERT, folder / CA_KEY)
    if not paths.cert.is_file() or not paths.key.is_file():
        raise CertificateError(f"no CA in {folder}: run `edgecascade certs init --dir {folder}`")
    try:
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        key = serialization.load_pem_private_key(paths.key.read_bytes(), password=None)
    except ValueError as e:
        raise CertificateError(f"the CA in {folder} cannot be read ({e})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"the CA key {paths.key} is not an EC key")
    return cert, key


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    now: datetime,
    days: int,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + timedelta(days=days))
    )


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write(paths: Issued, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
    pem_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomically(paths.key, pem_key, mode=0o600)
    write_atomically(paths.cert, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


def write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Replace `path` by `data` in one step, with permissions `mode` from the start."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
