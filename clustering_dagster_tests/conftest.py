"""The suite's fixtures. Shared helpers live in `support/` (imported by the benchmarks too)."""

import os

import pytest

from .support.chromium import Browser, chromium
from .support.workspace import Workspace

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    return Workspace(tmp_path)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium, one per test module."""
    assert chromium(), "the explorer tests need headless Chromium: apt-get install chromium"
    with Browser() as page:
        yield page


@pytest.fixture
def page(browser):
    """The module's browser, its console errors and requests cleared."""
    browser.errors.clear()
    browser.requests.clear()
    return browser
