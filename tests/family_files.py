"""The built fashion family's files, copied so that a test may change them."""

import shutil
from pathlib import Path

from edgecascade.cloud.common.paths import family_dir


def copy_family(dest: Path) -> Path:
    """Copy the fashion family folder (without its prediction splits) to `dest`."""
    shutil.copytree(family_dir("fashion"), dest, ignore=shutil.ignore_patterns("*.npz"))
    return dest
