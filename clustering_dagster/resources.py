"""Resources: the DuckDB file and where datasets and run configurations are read from."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
from dagster import ConfigurableResource
from dagster_duckdb import DuckDBResource

from .core import settings
from .core.datasets import DatasetSpec, find_dataset
from .core.run_config import RunConfig, load_run_configs
from .core.storage import ensure_schema


class ClusteringSettings(ConfigurableResource):
    datasets_dir: str = str(settings.datasets_dir())
    run_configs_path: str = str(settings.run_configs_path())

    def dataset(self, key: str) -> DatasetSpec:
        return find_dataset(Path(self.datasets_dir), key)

    def run_configs(self) -> dict[str, RunConfig]:
        return load_run_configs(Path(self.run_configs_path))

    def run_config(self, name: str) -> RunConfig:
        return self.run_configs()[name]


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
        "duckdb": DuckDBResource(database=str(settings.duckdb_path())),
        "clustering": ClusteringSettings(),
    }
