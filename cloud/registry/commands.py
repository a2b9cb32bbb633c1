"""`edgecascade models publish | activate | list`: the cloud model registry from the shell."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from edgecascade.cloud.common import signing
from edgecascade.cloud.common.errors import UserError
from edgecascade.cloud.common.transport import Tls, Transport
from edgecascade.cloud.registry.rollout import DEFAULT_KEEP, CloudTarget, Rollout, roll_out
from edgecascade.cloud.registry.store import NotFound, Registry
from edgecascade.cloud.triton.control import ModelControl, TritonControlError
from edgecascade.cloud.triton.server import ADMIN_KEY_HEADER, read_admin_key

console = Console()

RegistryOption = Annotated[
    Path | None, typer.Option(help="registry folder (default: <artifacts root>/registry)")
]
TritonOption = Annotated[
    list[str] | None,
    typer.Option(
        help="HOST:PORT (gRPC) of a Triton in explicit model-control mode: the cloud version is "
        "loaded and ready there before the new version becomes current (repeat for a cluster)"
    ),
]
RepositoryOption = Annotated[
    list[Path] | None,
    typer.Option(help="that Triton's model repository (one per --triton, in the same order)"),
]
KeepOption = Annotated[
    int,
    typer.Option(help="with --triton: serve the cloud versions of the last N current versions"),
]
TritonCaOption = Annotated[
    Path | None, typer.Option(help="with --triton: speak TLS, verifying it against this CA")
]
TritonCertOption = Annotated[
    Path | None, typer.Option(help="with --triton-ca: client certificate (mutual TLS)")
]
TritonKeyOption = Annotated[Path | None, typer.Option(help="private key of --triton-cert")]
TokenFileOption = Annotated[
    Path | None,
    typer.Option(help="with --triton at a router gateway: file with an admin caller's token"),
]
GpuOption = Annotated[
    bool,
    typer.Option(
        help="with --triton: write the GPU variant (ONNX Runtime on KIND_GPU, the family model "
        "for the edgecascade Triton image, deploy/triton.Dockerfile) into the repositories"
    ),
]
AdminKeyFileOption = Annotated[
    Path | None,
    typer.Option(help="with --triton straight to Triton: file with its restricted-protocol key"),
]


def publish(
    family: Annotated[str, typer.Option(help="family to publish")],
    source: Annotated[
        Path | None, typer.Option(help="family folder (default: the one `models build` wrote)")
    ] = None,
    registry: RegistryOption = None,
    triton: TritonOption = None,
    repository: RepositoryOption = None,
    keep: KeepOption = DEFAULT_KEEP,
    triton_ca: TritonCaOption = None,
    triton_cert: TritonCertOption = None,
    triton_key: TritonKeyOption = None,
    token_file: TokenFileOption = None,
    admin_key_file: AdminKeyFileOption = None,
    gpu: GpuOption = False,
    signing_key: Annotated[
        Path | None,
        typer.Option(
            help="Ed25519 private key that signs the manifest (default: the development key "
            "<artifacts root>/keys/dev.ed25519, made when missing)"
        ),
    ] = None,
) -> None:
    """Publish a built (retrained, re-quantized or re-calibrated) family as its next version,
    its manifest signed."""
    store = Registry(registry)
    targets = _targets(
        triton, repository, triton_ca, triton_cert, triton_key, token_file, admin_key_file
    )
    with _errors():
        key = signing.load_private_key(signing_key) if signing_key else None
        publication = store.publish(family, source, activate=not targets, signing_key=key)
    manifest = publication.manifest
    if not publication.created:
        current = store.current_version(family)
        hint = "" if current == manifest.version else f" (current: v{current}; see models activate)"
        console.print(f"{family}: nothing changed since v{manifest.version}, no new version{hint}")
        return
    console.print(
        f"published [bold]{family} v{manifest.version}[/]: edge {manifest.edge.key}, "
        f"cloud {manifest.cloud.key} ({', '.join(publication.changes)})"
    )
    if not targets:
        console.print(f"{family} v{manifest.version} is current (no --triton: nothing loaded)")
        return
    _report(_roll_out(store, targets, family, manifest.version, keep, gpu))


def activate(
    family: Annotated[str, typer.Option(help="family")],
    version: Annotated[int, typer.Option(help="published version to make current")],
    registry: RegistryOption = None,
    triton: TritonOption = None,
    repository: RepositoryOption = None,
    keep: KeepOption = DEFAULT_KEEP,
    triton_ca: TritonCaOption = None,
    triton_cert: TritonCertOption = None,
    triton_key: TritonKeyOption = None,
    token_file: TokenFileOption = None,
    admin_key_file: AdminKeyFileOption = None,
    gpu: GpuOption = False,
) -> None:
    """Make a published version current again (a rollback), its cloud model loaded first."""
    store = Registry(registry)
    targets = _targets(
        triton, repository, triton_ca, triton_cert, triton_key, token_file, admin_key_file
    )
    if not targets:
        with _errors():
            manifest = store.activate(family, version)
        console.print(f"{family} v{manifest.version} is current (no --triton: nothing loaded)")
        return
    _report(_roll_out(store, targets, family, version, keep, gpu))


def list_models(
    family: Annotated[str | None, typer.Option(help="only this family")] = None,
    registry: RegistryOption = None,
) -> None:
    """Published family versions; `*` marks each family's current one."""
    store = Registry(registry)
    with _errors():
        manifests = store.history(family) if family else store.manifests()
    if not manifests:
        console.print(f"nothing published in {store.root}")
        return
    current = store.current_versions()
    table = Table(title=f"registry {store.root}", box=None, pad_edge=False)
    for column in ("family", "ver", "edge", "cloud", "threshold", "created", "cur"):
        table.add_column(column, no_wrap=True)
    for m in manifests:
        table.add_row(
            m.family,
            str(m.version),
            m.edge.key,
            m.cloud.key,
            f"{m.policy.threshold:.4f}",
            m.created[:16].replace("T", " "),
            "[bold green]*[/]" if current.get(m.family) == m.version else "",
        )
    console.print(table)


def _targets(
    triton: list[str] | None,
    repository: list[Path] | None,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    token_file: Path | None,
    admin_key_file: Path | None,
) -> list[CloudTarget]:
    """The Triton servers of --triton with their --repository, each called over the transport
    of the --triton-* options (see _control_transport)."""
    transport = _control_transport(ca, cert, key, token_file, admin_key_file)
    if len(triton or []) != len(repository or []):
        raise typer.BadParameter("give one --repository per --triton, in the same order")
    return [
        CloudTarget(ModelControl(t, transport=transport), r)
        for t, r in zip(triton or [], repository or [])
    ]


def _control_transport(
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    token_file: Path | None,
    admin_key_file: Path | None,
) -> Transport:
    """How model-control calls reach Triton: TLS, and the credential that allows them (an
    admin token for a gateway, the restricted-protocol key for Triton itself)."""
    try:
        if ca is None and (cert or key):
            raise ValueError("--triton-cert and --triton-key need --triton-ca")
        tls = Tls(ca, cert, key) if ca else None
        metadata: list[tuple[str, str]] = []
        if token_file is not None:
            metadata.append(("authorization", f"Bearer {_read_secret(token_file, 'token')}"))
        if admin_key_file is not None:
            metadata.append((ADMIN_KEY_HEADER, read_admin_key(admin_key_file)))
    except (ValueError, UserError) as e:
        raise typer.BadParameter(str(e)) from None
    return Transport(tls=tls, metadata=tuple(metadata))


def _read_secret(path: Path, what: str) -> str:
    try:
        return path.read_text().strip()
    except OSError as e:
        raise UserError(f"{what} file {path} cannot be read: {e.strerror}") from None


def _roll_out(
    store: Registry, targets: list[CloudTarget], family: str, version: int, keep: int, gpu: bool
) -> Rollout:
    where = f"{len(targets)} Triton servers" if len(targets) > 1 else "Triton"
    with _errors(), console.status(f"loading the cloud model of {family} v{version} in {where}"):
        return roll_out(store, targets, family, version, keep=keep, gpu=gpu)


def _report(rollout: Rollout) -> None:
    m = rollout.manifest
    console.print(
        f"cloud {m.cloud.key} ready in every Triton after {rollout.ready_s:.1f}s; "
        f"[bold]{m.family} v{m.version}[/] is current"
    )
    for url, versions in rollout.serving.items():
        console.print(f"Triton {url} serves {m.cloud.name} versions {versions}")
    if rollout.unloaded:
        console.print(f"unloaded {m.cloud.name} versions {rollout.unloaded}")


@contextmanager
def _errors() -> Iterator[None]:
    """Registry and Triton failures end the command with their message and exit code 1."""
    try:
        yield
    except (NotFound, ValueError, TritonControlError) as exc:  # CorruptBlob is a ValueError
        console.print(f"[red]error[/]: {exc}")
        raise typer.Exit(1) from exc
