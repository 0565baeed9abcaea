"""The code version recorded with every materialisation: package version and git commit."""

import subprocess
from functools import cache
from importlib.metadata import PackageNotFoundError, version

from .settings import REPO_ROOT


@cache
def code_version() -> str:
    """`<package version>+<commit>[.dirty]` from a git checkout, else the package version."""
    try:
        package = version("clustering_dagster")
    except PackageNotFoundError:
        package = "unknown"
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty=.dirty", "--abbrev=10"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return package
    return f"{package}+{commit}"
