"""Real materialisations in isolation: a datasets folder, a run-configuration file, a DuckDB file
and a Dagster instance under one folder (`Workspace`), real Banking77 queries to put in it
(`banking_slice`), an asset's metadata from a result (`metadata`) and an LLM call cache of its
own (`call_cache`)."""

from pathlib import Path

import duckdb
import polars as pl
from dagster import DagsterInstance, materialize

from clustering_dagster.assets import ALL_ASSETS
from clustering_dagster.core.llm.cache import CallCache
from clustering_dagster.core.storage.store import connect, ensure_schema
from clustering_dagster.partitions import partition_key
from clustering_dagster.resources import ClusteringSettings, DuckDBStore

from .paths import SAMPLE, SHIPPED_CONFIGS


def banking_slice(n_categories: int = 12) -> pl.DataFrame:
    """Real Banking77 queries: the shipped sample's first n categories (20 queries each)."""
    sample = pl.read_csv(SAMPLE)
    keep = sorted(sample["category"].unique())[:n_categories]
    return sample.filter(pl.col("category").is_in(keep))


class Workspace:
    """A datasets folder, a run-configuration file and a DuckDB file under `root`, plus a
    Dagster instance, so each test materialises real partitions in isolation."""

    def __init__(self, root: Path):
        self.root = root
        self.datasets = root / "datasets"
        self.datasets.mkdir()
        self.database = root / "results.duckdb"
        self.configs = SHIPPED_CONFIGS
        (root / "dagster_home").mkdir()
        self.instance = DagsterInstance.local_temp(str(root / "dagster_home"))

    def add_dataset(
        self,
        name: str,
        frame: pl.DataFrame | None = None,
        *,
        raw: bytes | None = None,
        suffix: str = ".csv",
        spec: str | None = None,
    ) -> Path:
        path = self.datasets / f"{name}{suffix}"
        if raw is not None:
            path.write_bytes(raw)
        elif suffix == ".csv":
            frame.write_csv(path)
        elif suffix == ".parquet":
            frame.write_parquet(path)
        else:
            frame.write_ndjson(path)
        if spec is not None:
            (self.datasets / f"{name}.yaml").write_text(spec)
        return path

    def write_configs(self, text: str) -> None:
        self.configs = self.root / "run_configs.yaml"
        self.configs.write_text(text)

    def materialize(
        self,
        dataset: str,
        run_config: str = "default",
        raise_on_error: bool = True,
        assets=ALL_ASSETS,
    ):
        if dataset not in self.instance.get_dynamic_partitions("dataset"):
            self.instance.add_dynamic_partitions("dataset", [dataset])
        return materialize(
            assets,
            instance=self.instance,
            partition_key=partition_key(dataset, run_config),
            resources={
                "duckdb": DuckDBStore(database=str(self.database)),
                "clustering": ClusteringSettings(
                    datasets_dir=str(self.datasets), run_configs_path=str(self.configs)
                ),
            },
            raise_on_error=raise_on_error,
        )

    def sql(self, query: str, params=None) -> pl.DataFrame:
        with connect(self.database) as conn:
            return conn.execute(query, params or []).pl()


def metadata(result, asset: str) -> dict:
    """The metadata of `asset`'s materialisation in a materialize() result, as plain values."""
    for event in result.get_asset_materialization_events():
        if event.materialization.asset_key.to_user_string() == asset:
            return {k: v.value for k, v in event.materialization.metadata.items()}
    raise KeyError(asset)


def call_cache(folder: Path) -> CallCache:
    """An LLM call cache in a DuckDB file of its own, in `folder`."""
    path = str(folder / "calls.duckdb")
    with duckdb.connect(path) as conn:
        ensure_schema(conn)
    return CallCache(lambda: duckdb.connect(path))
