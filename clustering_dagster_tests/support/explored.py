"""One materialised results database for the CLI, search and map tests, built once per session:
240 real Banking77 queries (12 intents) clustered with the shipped `default` configuration, and
the same texts named by an LLM (the test server, over real HTTP) as `llm_example`, alias `fake`."""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from .openai_server import OpenAICompatibleServer
from .paths import SHIPPED_CONFIGS
from .workspace import Workspace, banking_slice

DATASET = "bank"
LLM_CONFIG = "llm_example"
ALIAS = "fake"
CLI = Path(sys.executable).parent / "clustering-dagster"  # installed by `pip install -e .`


@dataclass(frozen=True)
class Explored:
    workspace: Workspace

    @property
    def database(self) -> Path:
        return self.workspace.database

    def run(self, *args: str, stdin: str = "", timeout: float = 300) -> subprocess.CompletedProcess:
        """`clustering-dagster --db <database> ARGS` in a fresh process."""
        return subprocess.run(
            [str(CLI), "--db", str(self.database), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=os.environ | {"HF_HUB_OFFLINE": "1"},
        )

    def json(self, *args: str):
        done = self.run(*args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


def _configs(api_base: str) -> str:
    """The shipped run configurations, `llm_example` summarised by the test server."""
    configs = yaml.safe_load(SHIPPED_CONFIGS.read_text())
    configs[LLM_CONFIG]["labeler"]["summaries"] = {
        ALIAS: {
            "model": "openai/gpt-4o-mini",
            "api_base": api_base,
            "timeout_s": 5,
            "max_retries": 2,
            "backoff_s": 0.01,
            "merge_ratio": 3,
            "neighbourhood_size": 8,
        }
    }
    return yaml.safe_dump(configs)


_built: dict[str, Explored] = {}


def explored_database(tmp_path_factory) -> Explored:
    """The session's database (materialised on first use)."""
    if "db" not in _built:
        workspace = Workspace(tmp_path_factory.mktemp("explored"))
        workspace.add_dataset(DATASET, banking_slice(12), spec="label_column: category\n")
        key = os.environ.get("OPENAI_API_KEY")
        os.environ["OPENAI_API_KEY"] = "sk-test"
        try:
            with OpenAICompatibleServer() as server:
                workspace.write_configs(_configs(server.api_base))
                for run_config in ("default", LLM_CONFIG):
                    assert workspace.materialize(DATASET, run_config).success
        finally:
            if key is None:
                os.environ.pop("OPENAI_API_KEY")
            else:
                os.environ["OPENAI_API_KEY"] = key
        _built["db"] = Explored(workspace)
    return _built["db"]
