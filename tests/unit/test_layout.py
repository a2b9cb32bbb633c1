"""The layout tells the architecture: imports follow the data, edge -> router -> cloud; the
Python client (proto/edgecascade/client) stands on the shared contract alone."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIERS = ["cloud", "router", "edge"]  # each may import the ones before it, never after
SHARED = "cloud.common"  # the contract every tier imports; it imports no other part of cloud
CLIENT = ROOT / "proto" / "edgecascade" / "client"  # edgecascade.client, which edge may import


def modules(tier: str) -> list[Path]:
    return sorted((ROOT / tier).rglob("*.py"))


def imports_above(allowed: set[str], paths: list[Path]) -> set[str]:
    """`file: module` for each import by `paths` of a module outside the `allowed` ones (and
    the packages under them)."""
    return {
        f"{path.relative_to(ROOT)}: {name}"
        for path in paths
        for name in imported(path)
        if not any(name == a or name.startswith(f"{a}.") for a in allowed)
    }


def imported(path: Path) -> set[str]:
    """`edgecascade.*` modules imported by `path`, without the `edgecascade.` prefix."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {n.removeprefix("edgecascade.") for n in names if n.startswith("edgecascade.")}


@pytest.mark.parametrize("tier", TIERS)
def test_a_tier_imports_only_the_tiers_below_it(tier: str) -> None:
    allowed = {"v1", *TIERS[: TIERS.index(tier) + 1], *(["client"] if tier == "edge" else [])}
    wrong = imports_above(allowed, modules(tier))
    assert not wrong, f"{tier} imports upwards (edge -> router -> cloud): {sorted(wrong)}"


def test_the_client_imports_only_the_wire_and_the_shared_contract() -> None:
    wrong = imports_above({"v1", SHARED, "client"}, sorted(CLIENT.rglob("*.py")))
    assert not wrong, f"the client imports more than wire and shared contract: {sorted(wrong)}"


def test_the_shared_contract_imports_no_other_part_of_the_cloud() -> None:
    wrong = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in (ROOT / "cloud" / "common").rglob("*.py")
        for name in imported(path)
        if name.startswith("cloud.") and not name.startswith(SHARED)
    }
    assert not wrong, sorted(wrong)


def test_no_module_is_imported_by_its_old_top_level_name() -> None:
    wrong = set()
    for tier in TIERS:
        for path in modules(tier):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    if node.module.split(".")[0] in TIERS:
                        wrong.add(f"{path.relative_to(ROOT)}: {node.module}")
    assert not wrong, f"import these as edgecascade.<tier>...: {sorted(wrong)}"


@pytest.mark.parametrize("tier", TIERS)
def test_every_folder_with_code_is_a_package(tier: str) -> None:
    folders = {path.parent for path in modules(tier)}
    assert all((folder / "__init__.py").exists() for folder in folders), sorted(
        str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").exists()
    )
