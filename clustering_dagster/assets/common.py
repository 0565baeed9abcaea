"""What every asset shares: its partition, decorator arguments and result bookkeeping."""

import polars as pl
from dagster import AssetExecutionContext, MetadataValue

from ..core.run_config import RunConfig
from ..core.storage import Partition, record_materialization, replace_partition, transaction
from ..partitions import partition_of, partitions_def
from ..resources import ClusteringSettings

DUCKDB_POOL = "duckdb"
ASSET_ARGS = dict(
    partitions_def=partitions_def, pool=DUCKDB_POOL, group_name="clustering", kinds={"duckdb"}
)


def stage(
    context: AssetExecutionContext, clustering: ClusteringSettings
) -> tuple[Partition, RunConfig]:
    part = partition_of(context)
    return part, clustering.run_config(part.run_config)


def write_result(
    conn,
    context: AssetExecutionContext,
    part: Partition,
    config: RunConfig,
    tables: dict[str, pl.DataFrame],
    input_hash: str | None = None,
    stats: dict | None = None,
) -> None:
    """Replace the partition in every table and log the materialisation, in one transaction."""
    with transaction(conn):
        for table, frame in tables.items():
            replace_partition(conn, table, part, frame)
        record_materialization(
            conn,
            part,
            context.assets_def.key.to_user_string(),
            context.run.run_id,
            config.params(),
            config.params_hash(),
            input_hash,
            stats,
        )


def markdown_table(frame: pl.DataFrame) -> MetadataValue:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(str(v).replace("|", "/") for v in row) + " |" for row in frame.rows()]
    return MetadataValue.md("\n".join([header, rule, *rows]))
