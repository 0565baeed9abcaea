"""What every asset shares: its partition, decorator arguments and result bookkeeping."""

import time
from weakref import WeakKeyDictionary

import polars as pl
from dagster import AssetExecutionContext, MetadataValue

from ..core.provenance import code_version
from ..core.run_config import RunConfig
from ..core.storage import (
    MaterializationRecord,
    Partition,
    append_rows,
    record_materialization,
    replace_aliases,
    replace_partition,
    transaction,
)
from ..partitions import partition_of, partitions_def
from ..resources import ClusteringSettings

DUCKDB_POOL = "duckdb"
ASSET_ARGS = dict(
    partitions_def=partitions_def, pool=DUCKDB_POOL, group_name="clustering", kinds={"duckdb"}
)


# When each running asset started, for the per-stage timings in `materializations`.
_started: WeakKeyDictionary = WeakKeyDictionary()


def stage(
    context: AssetExecutionContext, clustering: ClusteringSettings
) -> tuple[Partition, RunConfig]:
    """The partition and run configuration of a starting asset (and its start time)."""
    _started[context] = time.perf_counter()
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
    history: dict[str, pl.DataFrame] | None = None,
    aliased: dict[str, pl.DataFrame] | None = None,
) -> None:
    """Replace the partition in every table of `tables`, add the rows of `history` (append-only
    tables), replace only the aliases present in each frame of `aliased` (tables keyed by alias),
    and log the materialisation, all in one transaction."""
    with transaction(conn):
        for table, frame in tables.items():
            replace_partition(conn, table, part, frame)
        for table, frame in (history or {}).items():
            append_rows(conn, table, part, frame)
        for table, frame in (aliased or {}).items():
            replace_aliases(conn, table, part, frame)
        record = MaterializationRecord(
            asset=context.assets_def.key.to_user_string(),
            run_id=context.run.run_id,
            params=config.params(),
            params_hash=config.params_hash(),
            code_version=code_version(),
            rows=sum(frame.height for frame in [*tables.values(), *(aliased or {}).values()]),
            seconds=time.perf_counter() - _started.get(context, time.perf_counter()),
            input_hash=input_hash,
            stats=stats,
        )
        record_materialization(conn, part, record)


def markdown_table(frame: pl.DataFrame) -> MetadataValue:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(str(v).replace("|", "/") for v in row) + " |" for row in frame.rows()]
    return MetadataValue.md("\n".join([header, rule, *rows]))
