"""What every asset shares: its partition, decorator arguments and result bookkeeping."""

import functools
import time
from weakref import WeakKeyDictionary

import polars as pl
from dagster import AssetExecutionContext, Failure, MetadataValue, asset

from ..core.config.provenance import code_version
from ..core.config.run_config import RunConfig
from ..core.curation.refresh import refresh as refresh_curation
from ..core.errors import InputError
from ..core.pipeline import reads
from ..core.storage.snapshots import mark_written, publish_if_complete
from ..core.storage.store import (
    DatabaseBusy,
    MaterializationRecord,
    MissingResult,
    Partition,
    in_transaction,
    record_materialization,
    write_aliases,
    write_version,
)
from ..partitions import partition_of, partitions_def
from ..resources import ClusteringSettings
from ..run_health import claim_run, live_run_ids, reap_dead_runs

# No concurrency pool: a run that dies holds nothing (DuckDB's file lock goes with its process),
# and writers wait for each other's short connections (`DuckDBStore.lock_timeout_s`).
ASSET_ARGS = dict(partitions_def=partitions_def, group_name="clustering", kinds={"duckdb"})

# Mistakes in a user's files or selection, and a DuckDB file held too long by another process:
# the run fails with the message alone, no traceback.
USER_ERRORS = (InputError, MissingResult, DatabaseBusy)


def clustering_asset(**kwargs):
    """`@asset` with the arguments every stage shares and its deps from `core.pipeline`; a user
    error fails the run with its one-line message."""

    def decorate(fn):
        @functools.wraps(fn)
        def body(*args, **kw):
            try:
                return fn(*args, **kw)
            except USER_ERRORS as err:
                raise Failure(description=str(err), allow_retries=False) from None

        return asset(**ASSET_ARGS, deps=reads(fn.__name__), **kwargs)(body)

    return decorate


# When each running asset started, for the per-stage timings in `materializations`.
_started: WeakKeyDictionary = WeakKeyDictionary()


def stage(
    context: AssetExecutionContext, clustering: ClusteringSettings
) -> tuple[Partition, RunConfig]:
    """The partition (versioned by the run) and run configuration of a starting asset; the first
    step of a run in a process also tags the run with it and fails runs whose process died."""
    _started[context] = time.perf_counter()
    if claim_run(context.instance, context.run.run_id):
        for run_id in reap_dead_runs(context.instance):
            context.log.warning(f"run {run_id} had died without a word: marked failed")
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
    """Write the run's version of every table in `tables` and `history` (append-only tables,
    versioned alike), and of the aliases in each frame of `aliased` (the partition's other aliases
    are carried over), log the materialisation, and publish the run's results if this was its last
    asset: all in one transaction (run again whole if it conflicts with another writer's)."""
    asset = context.assets_def.key.to_user_string()
    history, aliased = history or {}, aliased or {}
    run_assets = {key.to_user_string() for key in context.job_def.asset_layer.selected_asset_keys}
    live = live_run_ids(context.instance)

    def write() -> tuple:
        for table, frame in {**tables, **history}.items():
            write_version(conn, table, part, frame)
        for table, frame in aliased.items():
            write_aliases(conn, table, part, frame)
        record = MaterializationRecord(
            asset=asset,
            run_id=context.run.run_id,
            params=config.params(),
            params_hash=config.params_hash(),
            code_version=code_version(),
            rows=sum(frame.height for frame in [*tables.values(), *aliased.values()]),
            seconds=time.perf_counter() - _started.get(context, time.perf_counter()),
            input_hash=input_hash,
            stats=stats,
        )
        record_materialization(conn, part, record)
        mark_written(conn, part, asset, [*tables, *history, *aliased])
        published = publish_if_complete(conn, part, run_assets, live)
        return published, None if published is None else refresh_curation(conn, part)

    # run again from the start if another writer's transaction conflicts (the lake): a step
    # replaces its own version's rows, so a second attempt leaves what the first would have
    published, edits = in_transaction(conn, write)
    if published is not None:
        context.log.info(f"published {part}: {', '.join(published.tables)}")
        if edits is not None:
            attention = edits.filter(edits["status"] == "needs_attention").height
            context.log.info(
                f"people's edits of {part}: {edits.height - attention} apply to the new result"
                + (f", {attention} need attention (`curate attention`)" if attention else "")
            )
        if published.withdrawn:
            context.log.warning(
                f"withdrew {', '.join(published.withdrawn)} of {part}: they were computed from "
                "results this run replaced; materialise them again"
            )


def markdown_table(frame: pl.DataFrame) -> MetadataValue:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(str(v).replace("|", "/") for v in row) + " |" for row in frame.rows()]
    return MetadataValue.md("\n".join([header, rule, *rows]))
