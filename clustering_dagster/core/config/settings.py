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


def ducklake(environ=None) -> tuple[str, str] | None:
    """The results store when it is a DuckLake (docs/distributed.md): (catalog, data path) from
    CLUSTERING_DUCKLAKE (DuckLake's catalog, e.g. `postgres:dbname=lake host=db user=clustering`;
    a password comes from PGPASSWORD or ~/.pgpass, not from here) and CLUSTERING_DUCKLAKE_DATA (a
    folder, or `s3://bucket/prefix/`). None when CLUSTERING_DUCKLAKE is unset: the results are the
    single DuckDB file at `duckdb_path()`."""
    environ = os.environ if environ is None else environ
    catalog = environ.get("CLUSTERING_DUCKLAKE", "").strip()
    if not catalog:
        return None
    catalog = catalog.removeprefix("ducklake:")
    data = environ.get("CLUSTERING_DUCKLAKE_DATA", "").strip()
    if not data:
        raise ValueError(
            "CLUSTERING_DUCKLAKE is set but CLUSTERING_DUCKLAKE_DATA is not: say where the lake's "
            "Parquet files go (a folder, or s3://bucket/prefix/)"
        )
    if "://" not in data:
        data = str(Path(data).expanduser())
    return catalog, data
