"""The suite's fixtures. Shared helpers live in `support/` (imported by the benchmarks too)."""

import os

import pytest

from .support.workspace import Workspace

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    return Workspace(tmp_path)
