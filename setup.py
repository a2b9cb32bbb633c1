"""Package discovery: the repository's top-level folders install under the `edgecascade` name.

`edge/`, `router/` and `cloud/` stay at the repository root (the design fixes that layout);
installed they are `edgecascade.edge`, `edgecascade.router` and `edgecascade.cloud`, next to
the generated wire contract `edgecascade.v1` from `proto/`. Metadata lives in pyproject.toml.
"""

from setuptools import find_packages, setup

ROOTS = {
    "edgecascade": "proto/edgecascade",
    "edgecascade.edge": "edge",
    "edgecascade.router": "router",
    "edgecascade.cloud": "cloud",
}


def packages() -> list[str]:
    """Every package under each root, named from the root's installed name."""
    found = []
    for name, folder in ROOTS.items():
        found.append(name)
        found += [f"{name}.{sub}" for sub in find_packages(folder)]
    return sorted(set(found))


setup(packages=packages(), package_dir=ROOTS)
