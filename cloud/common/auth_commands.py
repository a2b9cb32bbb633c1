"""`edgecascade auth ...`: callers of the agent and the gateway, with their scopes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgecascade.cloud.common.auth import SCOPES, AuthError, Callers, Scope

app = typer.Typer(
    help="Callers and their scopes (bearer tokens, client certificates).", no_args_is_help=True
)

CallerFile = Annotated[
    Path, typer.Option("--file", help="the caller file (created if missing, kept 0600)")
]
Name = Annotated[str, typer.Option(help="who the caller is (shown in logs and errors)")]
Scopes = Annotated[
    list[str], typer.Option("--scope", help=f"one of {', '.join(SCOPES)} (repeatable)")
]


def _scopes(command: str, given: list[str]) -> list[Scope]:
    wrong = [s for s in given if s not in SCOPES]
    if wrong:
        raise _fail(command, AuthError(f"scope {wrong[0]!r}: expected one of {', '.join(SCOPES)}"))
    return [s for s in SCOPES if s in given]


def _load(path: Path) -> Callers:
    return Callers.load(path) if path.exists() else Callers()


def _fail(command: str, error: Exception) -> typer.Exit:
    typer.echo(f"edgecascade auth {command}: {error}", err=True)
    return typer.Exit(2)


@app.command("add-token")
def add_token(file: CallerFile, name: Name, scope: Scopes) -> None:
    """Add a caller with a new bearer token; the token is printed once (only its sha256 is
    stored): give it to the caller as `authorization: Bearer <token>`."""
    scopes = _scopes("add-token", scope)
    try:
        callers, token = _load(file).with_new_token(name, scopes)
        callers.save(file)
    except (AuthError, OSError) as e:
        raise _fail("add-token", e) from None
    typer.echo(f"caller '{name}' ({', '.join(scopes)}) added to {file}; its token:", err=True)
    typer.echo(token)


@app.command("add-certificate")
def add_certificate(
    file: CallerFile,
    name: Name,
    scope: Scopes,
    common_name: Annotated[
        str, typer.Option(help="the common name of its client certificate (mutual TLS)")
    ],
) -> None:
    """Add a caller recognised by its client certificate (`certs issue NAME --client`)."""
    scopes = _scopes("add-certificate", scope)
    try:
        _load(file).with_certificate(name, common_name, scopes).save(file)
    except (AuthError, OSError) as e:
        raise _fail("add-certificate", e) from None
    typer.echo(f"caller '{name}' ({', '.join(scopes)}) = certificate {common_name!r} in {file}")
