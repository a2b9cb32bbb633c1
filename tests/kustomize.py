"""deploy/k8s as a cluster gets it: each overlay rendered by `kubectl kustomize`."""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

K8S = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())

Manifest = dict[str, Any]


@functools.cache
def rendered(overlay: str) -> tuple[Manifest, ...]:
    """Every object of `overlay`, as `kubectl kustomize` renders it (a failure names why)."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl renders deploy/k8s: apt-get install kubectl (make test does)"
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True
    )
    assert result.returncode == 0, f"kubectl kustomize {overlay}: {result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def find(
    docs: tuple[Manifest, ...] | list[Manifest], kind: str, name: str | None = None
) -> Manifest:
    """The one object of `kind` (named `name` when given)."""
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} objects, expected one"
    return found[0]
