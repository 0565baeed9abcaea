"""Resources: the DuckDB file and where datasets and run configurations are read from."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
from dagster import ConfigurableResource, get_dagster_logger
from dagster_duckdb import DuckDBResource
from pydantic import Field

from .core.config import settings
from .core.config.run_config import RunConfig, RunConfigs, load_run_configs
from .core.data_in.datasets import DatasetSpec, find_dataset
from .core.errors import InputError
from .core.storage.store import connect, ensure_schema


class ClusteringSettings(ConfigurableResource):
    datasets_dir: str = str(settings.datasets_dir())
    run_configs_path: str = str(settings.run_configs_path())

    def dataset(self, key: str) -> DatasetSpec:
        return find_dataset(Path(self.datasets_dir), key)

    def run_configs(self) -> RunConfigs:
        return load_run_configs(Path(self.run_configs_path))

    def run_config(self, name: str) -> RunConfig:
        """The named configuration, or an InputError naming the file and what is wrong with it."""
        configs = self.run_configs()
        if name in configs.errors:
            raise InputError(configs.errors[name])
        if name not in configs.valid:
            known = ", ".join(sorted(configs.valid)) or "none"
            raise InputError(
                f"{self.run_configs_path}: no run configuration {name!r} (known: {known})"
            )
        return configs.valid[name]


class DuckDBStore(DuckDBResource):
    """DuckDBResource that waits a bounded time for another process's lock, saying so in the
    run's log, and then fails with a message naming the holder (instead of silent retries)."""

    lock_timeout_s: float = Field(
        default=300.0,
        description="how long a run waits for the DuckDB file while another process holds it",
    )

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        conn = connect(self.database, self.lock_timeout_s, get_dagster_logger().warning)
        try:
            yield conn
        finally:
            conn.close()


@contextmanager
def connection(db: DuckDBResource) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection with the schema in place; hold it only around reads and writes."""
    if db.database != ":memory:":
        Path(db.database).parent.mkdir(parents=True, exist_ok=True)
    with db.get_connection() as conn:
        ensure_schema(conn)
        yield conn


def default_resources() -> dict:
    return {
        "duckdb": DuckDBStore(
            database=str(settings.duckdb_path()), lock_timeout_s=settings.lock_timeout_s()
        ),
        "clustering": ClusteringSettings(),
    }
