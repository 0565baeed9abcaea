"""Where things live on disk. Every path can be overridden by an environment variable."""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
DATA_DIR = REPO_ROOT / "data"


def _path(env: str, default: Path) -> Path:
    return Path(os.environ.get(env, default)).expanduser().resolve()


def duckdb_path() -> Path:
    return _path("CLUSTERING_DUCKDB_PATH", DATA_DIR / "clustering_dagster.duckdb")


def datasets_dir() -> Path:
    return _path("CLUSTERING_DATASETS_DIR", DATA_DIR / "datasets")


def run_configs_path() -> Path:
    return _path("CLUSTERING_RUN_CONFIGS", DATA_DIR / "run_configs.yaml")


def operations_path() -> Path:
    return _path("CLUSTERING_OPERATIONS", DATA_DIR / "operations.yaml")


def dagster_home() -> Path:
    """Where Dagster keeps runs when DAGSTER_HOME is not set: dagster_home/ in the repository."""
    return _path("DAGSTER_HOME", REPO_ROOT / "dagster_home")


def lock_timeout_s() -> float:
    """Seconds a writer waits for a DuckDB file another process holds (default 300)."""
    return float(os.environ.get("CLUSTERING_LOCK_TIMEOUT_S", 300))


def executor_name() -> str:
    """How a run executes its steps: in_process (default), multiprocess, k8s or celery."""
    return os.environ.get("CLUSTERING_EXECUTOR", "in_process")
