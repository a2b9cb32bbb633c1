"""`edgecascade certs ...`: a development CA and the certificates for agents, gateways, Triton
and clients."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from edgecascade.cloud.common import certs, signing
from edgecascade.cloud.common.paths import artifacts_root

app = typer.Typer(
    help="Development certificates (a local CA and what it signs) and manifest signing keys.",
    no_args_is_help=True,
)

Folder = Annotated[
    Path | None,
    typer.Option("--dir", help="the CA's folder (default: <artifacts>/certs)"),
]


def _folder(folder: Path | None) -> Path:
    return folder if folder is not None else artifacts_root() / "certs"


@contextmanager
def _failures(command: str, *errors: type[Exception]) -> Iterator[None]:
    """`errors` end `edgecascade certs <command>` with their message and exit code 2."""
    try:
        yield
    except errors as e:
        typer.echo(f"edgecascade certs {command}: {e}", err=True)
        raise typer.Exit(2) from None


@app.command("init")
def init_command(
    folder: Folder = None,
    name: Annotated[str, typer.Option(help="the CA's common name")] = (
        "edgecascade development CA"
    ),
    days: Annotated[int, typer.Option(min=1, help="validity in days")] = 3650,
    force: Annotated[bool, typer.Option(help="replace an existing CA")] = False,
) -> None:
    """Create the CA (ca.pem, ca.key) that signs every development certificate."""
    with _failures("init", certs.CertificateError, OSError):
        ca = certs.init(_folder(folder), name=name, days=days, force=force)
    typer.echo(f"CA {ca.cert} (key {ca.key}, keep it private)")


@app.command("issue")
def issue_command(
    name: Annotated[str, typer.Argument(help="common name; <name>.pem and <name>.key are written")],
    folder: Folder = None,
    host: Annotated[
        list[str] | None,
        typer.Option(help="DNS name or IP address a server is reached by (repeatable)"),
    ] = None,
    client: Annotated[
        bool, typer.Option("--client", help="a client certificate (mutual TLS) for `name`")
    ] = False,
    days: Annotated[int, typer.Option(min=1, help="validity in days")] = 825,
) -> None:
    """Issue a server certificate (default hosts: localhost, 127.0.0.1, ::1) or, with
    --client, a client certificate, signed by the CA."""
    with _failures("issue", certs.CertificateError, OSError):
        issued = certs.issue(
            _folder(folder),
            name,
            hosts=host or certs.LOOPBACK_HOSTS,
            kind="client" if client else "server",
            days=days,
        )
    typer.echo(f"{'client' if client else 'server'} certificate {issued.cert} (key {issued.key})")


@app.command("signing-key")
def signing_key_command(
    name: Annotated[str, typer.Argument(help="<name>.ed25519 (private), <name>.ed25519.pub")],
    folder: Folder = None,
) -> None:
    """Make an Ed25519 key that signs manifests; edges trust its .pub file."""
    with _failures("signing-key", signing.SigningKeyError, OSError):
        private, public = signing.generate_key(_folder(folder), name)
    key_id = signing.key_id(signing.load_private_key(private).public_key())
    typer.echo(f"signing key {key_id}: {private} (keep it private), {public} (for the edges)")
