"""What the benchmarks share: labelled datasets linked into a datasets folder, a real
materialisation of the pipeline in a fresh Dagster instance, and the published levels of a
partition read back with their ground truth."""

import os
import platform
import time
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"  # gitignored: DuckDB files kept between runs (vector cache)

# Labelled datasets: key -> (source file or folder, dataset YAML). The labels only evaluate.
LABELLED = {
    "banking77": (REPO / "data" / "banking77", "label_column: category\n"),
    "banking77_sample": (
        REPO / "data" / "datasets" / "banking77_sample.csv",
        "label_column: category\n",
    ),
    "hwu64": (
        REPO / "data" / "hwu64" / "hwu64.csv",
        "label_column: intent\nmetadata_columns: [scenario]\n",
    ),
}


def link_datasets(folder: Path, keys: list[str]) -> Path:
    """A datasets folder holding links to the named labelled datasets and their YAML."""
    folder.mkdir(parents=True, exist_ok=True)
    for key in keys:
        source, spec = LABELLED[key]
        link = folder / (key + source.suffix)
        if not link.exists():
            link.symlink_to(source)
        (folder / f"{key}.yaml").write_text(spec)
    return folder


# The assets from the texts to the keyword tree (no map, no LLM): what most benchmarks cluster.
TREE_ASSETS = [
    "raw_texts",
    "embeddings",
    "projections",
    "cluster_levels",
    "cluster_labels",
    "cluster_hierarchy",
]


def tree_assets(names: list[str] = TREE_ASSETS) -> list:
    """The asset definitions named (by default the tree's)."""
    from clustering_dagster.assets import ALL_ASSETS

    return [a for a in ALL_ASSETS if a.key.to_user_string() in names]


def write_texts(datasets: Path, dataset: str, texts: pl.DataFrame) -> None:
    """`texts` (id, text, category) as the dataset `dataset`: a Parquet file written whole
    (renamed into place) and its YAML."""
    path = datasets / f"{dataset}.parquet"
    texts.write_parquet(path.with_suffix(".tmp"))
    path.with_suffix(".tmp").rename(path)
    (datasets / f"{dataset}.yaml").write_text(
        "text_column: text\nid_column: id\nlabel_column: category\n"
    )


def cluster_tree(database: Path, datasets: Path, dataset: str, run_config: str = "default"):
    """`materialise` the tree's assets (TREE_ASSETS) of the partition."""
    return materialise(database, datasets, dataset, run_config, assets=tree_assets())


def materialise(
    database: Path,
    datasets: Path,
    dataset: str,
    run_config: str,
    run_configs: Path | None = None,
    assets=None,
) -> dict:
    """One materialisation of `assets` (all of them by default) in this process, as
    `dagster asset materialize` runs them; its wall time and every asset's metadata."""
    from dagster import DagsterInstance, materialize

    from clustering_dagster.assets import ALL_ASSETS
    from clustering_dagster.partitions import partition_key
    from clustering_dagster.resources import ClusteringSettings, DuckDBStore

    settings = {"datasets_dir": str(datasets)}
    if run_configs is not None:
        settings["run_configs_path"] = str(run_configs)
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("dataset", [dataset])
        started = time.perf_counter()
        result = materialize(
            assets or ALL_ASSETS,
            instance=instance,
            partition_key=partition_key(dataset, run_config),
            resources={
                "duckdb": DuckDBStore(database=str(database)),
                "clustering": ClusteringSettings(**settings),
            },
        )
        seconds = time.perf_counter() - started
    stats = {}
    for event in result.get_asset_materialization_events():
        metadata = event.materialization.metadata
        stats[event.materialization.asset_key.to_user_string()] = {
            k: v.value for k, v in metadata.items() if k != "map"
        }
    return {"seconds": seconds, "assets": stats}


def published_levels(database: Path, dataset: str, run_config: str):
    """Every text at every level (level, level_name, row_idx, cluster_id, noise) with its ground
    truth and metadata, from the published results."""
    import duckdb

    with duckdb.connect(str(database), read_only=True) as conn:
        return conn.execute(
            "SELECT a.level, a.level_name, a.row_idx, a.cluster_id, a.noise, t.ground_truth, "
            "t.metadata FROM clustering.assignments a "
            "JOIN clustering.texts t USING (dataset, run_config, row_idx) "
            "WHERE dataset = ? AND run_config = ? ORDER BY a.level, a.row_idx",
            [dataset, run_config],
        ).pl()


def forget_projections(database: Path) -> None:
    """Delete every stored projection, so that the next materialisation computes its own."""
    import duckdb

    from clustering_dagster.core.storage.store import STORE

    with duckdb.connect(str(database)) as conn:
        conn.execute(f"DELETE FROM {STORE}.projections")


def machine() -> str:
    return (
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
