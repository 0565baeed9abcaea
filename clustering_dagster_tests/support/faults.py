"""Real runs in child processes, killed at chosen steps, and what a reader sees afterwards.

Shared by the crash-safety tests and `benchmarks/reliability.py`: each run is the README's own
`dagster asset materialize` command in a child process with its own DAGSTER_HOME, datasets folder,
run configurations and DuckDB file.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import polars as pl

from clustering_dagster.core.storage.lake import Lake

from .paths import REPO, SAMPLE

PARTITION = "bank|default"


def sample_texts(first_category: int, n_categories: int) -> pl.DataFrame:
    """Real Banking77 queries of the shipped sample: n categories (20 queries each), their
    whitespace normalised as ingestion does, so that they compare with what a reader sees."""
    sample = pl.read_csv(SAMPLE).with_columns(
        pl.col("text").str.replace_all(r"\s+", " ").str.strip_chars()
    )
    names = sorted(sample["category"].unique())[first_category : first_category + n_categories]
    return sample.filter(pl.col("category").is_in(names))


class Sandbox:
    """A folder with datasets, run configurations, a DuckDB file and a DAGSTER_HOME (with the
    repository's dagster.yaml), and the environment that points the code location at them (add
    CLUSTERING_DUCKLAKE and CLUSTERING_DUCKLAKE_DATA to `env` for results in a lake)."""

    def __init__(self, root: Path, lock_timeout_s: float = 60):
        self.root = root
        self.datasets = root / "datasets"
        self.datasets.mkdir(parents=True, exist_ok=True)
        self.database = root / "results.duckdb"
        self.configs = root / "run_configs.yaml"
        shutil.copy(REPO / "data" / "run_configs.yaml", self.configs)
        self.home = root / "dagster_home"
        self.home.mkdir(exist_ok=True)
        shutil.copy(REPO / "dagster_home" / "dagster.yaml", self.home / "dagster.yaml")
        self.env = {
            **os.environ,
            "DAGSTER_HOME": str(self.home),
            "CLUSTERING_DUCKDB_PATH": str(self.database),
            "CLUSTERING_DATASETS_DIR": str(self.datasets),
            "CLUSTERING_RUN_CONFIGS": str(self.configs),
            "CLUSTERING_LOCK_TIMEOUT_S": str(lock_timeout_s),
            "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(REPO),  # this checkout's code, whatever is installed
        }

    def write_dataset(self, name: str, frame: pl.DataFrame) -> None:
        frame.write_csv(self.datasets / f"{name}.csv")

    def register(self) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "clustering_dagster.cli", "register"],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def start(self, partition: str = PARTITION, select: str = "*") -> "Run":
        command = [
            sys.executable, "-m", "dagster", "asset", "materialize",
            "-m", "clustering_dagster.definitions", "--select", select, "--partition", partition,
        ]  # fmt: skip
        return Run(subprocess.Popen(
            command, env=self.env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,
        ))  # fmt: skip

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A short read-only connection to the results: the DuckDB file, or the lake when the
        environment names one (CLUSTERING_DUCKLAKE)."""
        lake = Lake.configured(self.env)
        if lake is not None:
            return lake.connect()
        return duckdb.connect(str(self.database), read_only=True)

    def read(self, query: str, params=None) -> pl.DataFrame:
        """A short read-only query, as the README recommends while runs write."""
        with self.connect() as conn:
            return conn.execute(query, params or []).pl()

    def published_texts(self, partition: str = PARTITION) -> pl.DataFrame:
        dataset, run_config = partition.split("|")
        return self.read(
            "SELECT row_idx, text, text_hash FROM clustering.texts "
            "WHERE dataset = ? AND run_config = ? ORDER BY row_idx",
            [dataset, run_config],
        )

    def stored_vectors(self) -> int:
        return self.read("SELECT count(*) AS n FROM clustering.embedding_store_384")["n"][0]

    def embedded_by_last_run(self) -> int:
        """Texts the latest `embeddings` step had to embed (not found in the vector store)."""
        stats = self.read(
            "SELECT stats FROM clustering.materializations WHERE asset = 'embeddings' "
            "ORDER BY materialized_at DESC LIMIT 1"
        )["stats"][0]
        return json.loads(stats)["new"]


class Run:
    """A child `dagster asset materialize`: its output, read line by line as it comes."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.lines: list[str] = []
        self.started = time.monotonic()

    def wait_for(self, marker: str, timeout: float = 600) -> float | None:
        """Read output until a line holds `marker`; seconds since the start, or None if the run
        ended (or the timeout passed) first."""
        deadline = time.monotonic() + timeout
        for line in self.process.stdout:
            self.lines.append(line)
            if marker in line:
                return time.monotonic() - self.started
            if time.monotonic() > deadline:
                break
        return None

    def kill(self) -> None:
        """kill -9 the run's whole process group: no cleanup code runs."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=60)

    def finish(self, timeout: float = 900) -> bool:
        out, _ = self.process.communicate(timeout=timeout)
        self.lines.append(out)
        return self.process.returncode == 0

    @property
    def output(self) -> str:
        return "".join(self.lines)

    @property
    def run_id(self) -> str | None:
        found = re.search(r" - ([0-9a-f]{8}-[0-9a-f-]{27}) - ", self.output)
        return found.group(1) if found else None


def step_start(asset: str) -> str:
    return f'Started execution of step "{asset}"'


def mismatches(sandbox: Sandbox, partition: str = PARTITION) -> dict[str, int]:
    """Rows a reader sees that do not belong with the partition's other results (all 0 when the
    partition is one consistent snapshot)."""
    dataset, run_config = partition.split("|")
    checks = {
        # assignments and embeddings of another run's texts
        "assignment_text": """SELECT count(*) FROM clustering.assignments a
            LEFT JOIN clustering.texts t USING (dataset, run_config, row_idx)
            WHERE a.dataset = $1 AND a.run_config = $2
              AND (t.text_hash IS NULL OR t.text_hash != a.text_hash)""",
        "embedding_text": """SELECT count(*) FROM clustering.embeddings e
            LEFT JOIN clustering.texts t USING (dataset, run_config, row_idx)
            WHERE e.dataset = $1 AND e.run_config = $2
              AND (t.text_hash IS NULL OR t.text_hash != e.text_hash)""",
        # texts without a cluster at a level, when levels are shown
        "text_unassigned": """SELECT count(*) FROM clustering.texts t
            CROSS JOIN (SELECT DISTINCT level FROM clustering.assignments
                        WHERE dataset = $1 AND run_config = $2) l
            ANTI JOIN clustering.assignments a ON a.dataset = t.dataset
              AND a.run_config = t.run_config AND a.row_idx = t.row_idx AND a.level = l.level
            WHERE t.dataset = $1 AND t.run_config = $2""",
        # clusters without a label, labels without a cluster, tree nodes of other clusters
        "cluster_label": """SELECT count(*) FROM (
              SELECT DISTINCT level, cluster_id FROM clustering.assignments
              WHERE dataset = $1 AND run_config = $2) a
            FULL JOIN (SELECT level, cluster_id, size FROM clustering.cluster_labels
              WHERE dataset = $1 AND run_config = $2) l USING (level, cluster_id)
            WHERE (SELECT count(*) FROM clustering.cluster_labels
                   WHERE dataset = $1 AND run_config = $2) > 0
              AND (a.cluster_id IS NULL OR l.cluster_id IS NULL)""",
        "tree_label": """SELECT count(*) FROM clustering.hierarchy h
            ANTI JOIN clustering.cluster_labels l ON l.dataset = h.dataset
              AND l.run_config = h.run_config AND l.level = h.level
              AND l.cluster_id = h.cluster_id AND l.label = h.label
            WHERE h.dataset = $1 AND h.run_config = $2""",
        "summary_cluster": """SELECT count(*) FROM clustering.cluster_summaries s
            ANTI JOIN clustering.cluster_labels l ON l.dataset = s.dataset
              AND l.run_config = s.run_config AND l.level_name = s.level_name
              AND l.cluster_id = s.cluster_id AND l.size = s.size
            WHERE s.dataset = $1 AND s.run_config = $2""",
    }
    with sandbox.connect() as conn:
        return {
            name: conn.execute(query, [dataset, run_config]).fetchone()[0]
            for name, query in checks.items()
        }
