"""The wheel carries every module under its `edgecascade.*` name, and its extras keep the
cloud off an edge device."""

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TRITON_BACKENDS = {  # run inside Triton only
    "edgecascade/cloud/triton/python_model.py",
    "edgecascade/cloud/triton/family_model.py",
}


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        timeout=300,
    )
    (wheel,) = out.glob("edgecascade-*.whl")
    target = out / "site"
    zipfile.ZipFile(wheel).extractall(target)
    return target


def test_the_wheel_holds_every_module_and_the_weights(unpacked: Path) -> None:
    inside = {str(p.relative_to(unpacked)) for p in unpacked.rglob("*") if p.is_file()}
    expected = {
        f"edgecascade/{tier}/{path.relative_to(ROOT / tier)}"
        for tier in ("edge", "router", "cloud")
        for path in (ROOT / tier).rglob("*.py")
    } | {
        f"edgecascade/{path.relative_to(ROOT / 'proto/edgecascade')}"
        for path in (ROOT / "proto/edgecascade").rglob("*.py")
    }
    assert expected <= inside, sorted(expected - inside)
    assert "edgecascade/cloud/build/families/weights/fashion_edge.onnx" in inside
    assert not any(name.split("/")[0] in {"edge", "router", "cloud"} for name in inside)


def test_every_module_imports_from_the_wheel(unpacked: Path) -> None:
    names = [
        str(path.relative_to(unpacked).with_suffix("")).replace("/", ".").removesuffix(".__init__")
        for path in sorted((unpacked / "edgecascade").rglob("*.py"))
        if path.name != "__main__.py" and str(path.relative_to(unpacked)) not in TRITON_BACKENDS
    ]
    check = (
        "import importlib, sys\n"
        f"root = {str(unpacked)!r}\n"
        "for name in sys.argv[1:]:\n"
        "    module = importlib.import_module(name)\n"
        "    assert module.__file__.startswith(root), (name, module.__file__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", check, *names],
        cwd=unpacked,
        env={"PYTHONPATH": str(unpacked), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    version = subprocess.run(
        [sys.executable, "-m", "edgecascade", "--version"],
        cwd=unpacked,
        env={"PYTHONPATH": str(unpacked), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert version.stdout.startswith("edgecascade "), version.stderr


def test_an_edge_install_carries_no_cloud_or_training_stack() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    edge = " ".join(project["dependencies"] + project["optional-dependencies"]["edge"]).lower()
    for heavy in ("nvidia-pytriton", "torch", "matplotlib", "scipy", "nncf"):
        assert heavy not in edge, heavy
    assert set(project["optional-dependencies"]) >= {"edge", "gateway", "cloud", "build", "dev"}


HEAVY_BLOCKER = """
import importlib.abc, sys
HEAVY = {"torch", "pytriton", "matplotlib", "scipy", "nncf", "onnx"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            raise ImportError(f"{name} is not part of an edge install")
sys.meta_path.insert(0, Block())
sys.argv = ["edgecascade", *sys.argv[1:]]
from edgecascade.edge.cli import app
app()
"""


@pytest.mark.parametrize(
    "command", [["edge", "serve", "--help"], ["edge", "run", "--help"], ["status", "--help"]]
)
def test_edge_commands_run_without_the_cloud_or_training_stack(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", HEAVY_BLOCKER, *command], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Usage" in result.stdout
