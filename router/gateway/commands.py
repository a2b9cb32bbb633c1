"""`edgecascade router upstreams ...`: edit the upstreams file that running gateways follow."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from edgecascade.cloud.common.errors import UserError
from edgecascade.cloud.common.serving import check_address
from edgecascade.router.gateway.discovery import read_upstreams, write_upstreams

upstreams_app = typer.Typer(
    help="The Triton endpoints in a gateway's --upstreams-file: the gateway adds a new one "
    "within a probe interval and drains one that is removed (in-flight requests finish).",
    no_args_is_help=True,
)

UpstreamsFile = Annotated[
    Path,
    typer.Option(
        "--file",
        envvar="EDGECASCADE_GATEWAY_UPSTREAMS_FILE",
        help="the file the gateways follow (their --upstreams-file)",
    ),
]
Address = Annotated[str, typer.Argument(help="Triton's gRPC endpoint, HOST:PORT")]


@contextmanager
def _editing(path: Path, create: bool) -> Iterator[list[str]]:
    """The file's endpoints, to change in place; written back at once, one editor at a time."""
    if not path.parent.is_dir():
        raise UserError(f"{path.parent} is not a folder: give --file in an existing folder")
    if not create and not path.exists():
        raise UserError(f"{path} does not exist: `edgecascade router upstreams add` creates it")
    with path.with_name(f".{path.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        upstreams = read_upstreams(path) if path.exists() else []
        yield upstreams
        write_upstreams(path, upstreams)


@upstreams_app.command("add")
def add_command(address: Address, file: UpstreamsFile) -> None:
    """List a Triton endpoint: gateways send it requests once it is ready."""
    address = check_address("upstream", address)
    with _editing(file, create=True) as upstreams:
        if address in upstreams:
            typer.echo(f"{address} is already in {file}")
            return
        upstreams.append(address)
    typer.echo(f"added {address} to {file}")


@upstreams_app.command("remove")
def remove_command(address: Address, file: UpstreamsFile) -> None:
    """Unlist a Triton endpoint: gateways drain it (no new requests, in-flight ones finish),
    then drop it; stop that Triton after the gateways' grace period."""
    with _editing(file, create=False) as upstreams:
        if address not in upstreams:
            raise UserError(
                f"{address} is not in {file} (listed: {', '.join(upstreams) or 'none'})"
            )
        upstreams.remove(address)
    typer.echo(f"removed {address} from {file}")


@upstreams_app.command("list")
def list_command(file: UpstreamsFile) -> None:
    """The endpoints the file lists, one a line."""
    if not file.exists():
        raise UserError(f"{file} does not exist: `edgecascade router upstreams add` creates it")
    for address in read_upstreams(file):
        typer.echo(address)
