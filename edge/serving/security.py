"""The agent's security, from its settings: the transport of its own port (TLS or mutual TLS,
caller checks), the transport of its calls to the cloud and ModelSync (TLS and a bearer token),
and the keys whose signed manifests it serves. A client of an agent (`edge run`, `status`, the
demo, the benchmarks) builds its transport with `client_transport` too."""

from __future__ import annotations

import logging
from pathlib import Path

from edgecascade.cloud.common import signing
from edgecascade.cloud.common.auth import TOKEN, Authorizer, Callers
from edgecascade.cloud.common.errors import UserError
from edgecascade.cloud.common.signing import TrustedKeys
from edgecascade.cloud.common.transport import Tls, Transport
from edgecascade.edge.serving.rpc import InternalErrors
from edgecascade.edge.serving.settings import EdgeSettings

log = logging.getLogger(__name__)


class SecurityError(UserError):
    """Security settings that cannot be used (a file missing or not what it should be)."""


def read_token(path: Path) -> str:
    """The bearer token in file `path` (surrounding white space ignored); the message of a
    SecurityError names the file, never its content."""
    try:
        token = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise SecurityError(f"token file {path} cannot be read: {e}") from None
    if not TOKEN.fullmatch(token):
        raise SecurityError(
            f"token file {path} does not hold a bearer token (make one with "
            "`edgecascade auth add-token`)"
        )
    return token


def client_transport(
    *,
    insecure: bool = False,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    token_file: Path | None = None,
) -> Transport:
    """How a client calls a server: TLS verified against `ca` (the system's roots when None),
    with the client certificate `cert`/`key` for mutual TLS, and the token in `token_file` on
    every call; plaintext with `insecure`."""
    if insecure and (ca or cert or key):
        raise SecurityError("--insecure calls in plaintext: leave --ca, --cert and --key out")
    tls = None if insecure else Tls(ca=ca, cert=cert, key=key)
    metadata = (("authorization", f"Bearer {read_token(token_file)}"),) if token_file else ()
    return Transport(tls=tls, metadata=metadata)


def cloud_transport(settings: EdgeSettings) -> Transport:
    """The transport of the agent's calls to cloud_url and sync_url."""
    return client_transport(
        insecure=settings.cloud_insecure,
        ca=settings.cloud_ca,
        cert=settings.cloud_cert,
        key=settings.cloud_key,
        token_file=settings.cloud_token_file,
    )


def server_transport(settings: EdgeSettings) -> Transport:
    """The transport of the agent's port: TLS (mutual when required) unless insecure; with a
    caller file, every call is checked (Authorizer) before InternalErrors sees it."""
    tls = (
        None
        if settings.insecure
        else Tls(
            ca=settings.tls_ca,
            cert=settings.tls_cert,
            key=settings.tls_key,
            require_client_cert=settings.require_client_cert,
        )
    )
    if tls is not None:
        tls.server_credentials()  # every file read and checked now, not at the first call
    callers = Callers.load(settings.callers) if settings.callers else None
    authorizer = (Authorizer(callers),) if callers else ()
    return Transport(
        max_message_bytes=settings.max_message_bytes,
        server_interceptors=(*authorizer, InternalErrors()),
        tls=tls,
    )


def describe_security(settings: EdgeSettings) -> str:
    """How the agent's port is protected, for its start-up log line (no secret in it)."""
    if settings.insecure:
        tls = "PLAINTEXT"
    else:
        tls = "mutual TLS" if settings.require_client_cert else "TLS"
    callers = f"callers from {settings.callers}" if settings.callers else "no caller check"
    return f"{tls}, {callers}"


INSECURE_HOP_TEXT = {
    "agent": "the agent's port serves plaintext (--insecure)",
    "cloud": "the calls to the cloud and ModelSync are plaintext (--cloud-insecure)",
}


def insecure_hops(settings: EdgeSettings) -> list[str]:
    """Which of the agent's hops run without TLS: `agent` (its own port) and `cloud` (its
    calls to the cloud and ModelSync, when it makes any)."""
    hops = ["agent"] if settings.insecure else []
    calls_out = settings.cloud_url or settings.sync_url
    return hops + (["cloud"] if settings.cloud_insecure and calls_out else [])


def trusted_keys(settings: EdgeSettings) -> TrustedKeys | None:
    """The public keys whose signatures the agent accepts; None when unsigned manifests are
    allowed (allow_unsigned). A SecurityError when none can be found."""
    if settings.allow_unsigned:
        return None
    paths = settings.trusted_key_paths
    missing = [str(p) for p in paths if not p.exists()]
    keys = signing.load_trusted(p for p in paths if p.exists())
    if not keys:
        where = ", ".join(str(p) for p in paths)
        raise SecurityError(
            f"no trusted manifest signing key in {where}"
            + (f" ({', '.join(missing)} does not exist)" if missing else "")
            + ": give --trusted-keys (the *.ed25519.pub of the key that signs the manifests), "
            "or --allow-unsigned to serve unsigned development builds"
        )
    return keys
