"""The result tools under hostile input (issue 21): nothing destroyed, nothing injected, one
clear line for every mistake. Texts from `fixtures/hostile_texts.jsonl` go through the real
pipeline; every command runs as a user runs it, in its own process. The cases live in
`support/hostile.py`, which `benchmarks/reliability.py` runs too."""

import pytest

from .support.hostile import CASES, build


@pytest.fixture(scope="session")
def hostile(tmp_path_factory):
    return build(tmp_path_factory.mktemp("hostile"))


@pytest.mark.parametrize("case", list(CASES))
def test_result_tools_under_hostile_input(hostile, tmp_path, case):
    CASES[case](hostile, tmp_path)
