"""What changed since the last run, and each cluster's size over runs, from `cluster_changes`.

Every full clustering writes its change report (`core/clustering/changes.py`: one row per cluster,
and per cluster that vanished, against the previous published clustering); the rows of every
published run stay, so the table is also the size history of every cluster. Both readers read the
views of schema `clustering` (published rows only) on a connection the caller gives.
"""

import polars as pl

from ..clustering.changes import REPORT_SCHEMA, ordered
from ..errors import InputError
from ..storage.store import SCHEMA, Partition

HISTORY_SCHEMA = {
    "dagster_run_id": pl.String,
    "recorded_at": pl.Datetime("us"),
    "event": pl.String,
    "size": pl.Int64,
    "share": pl.Float64,
}
RUN_SCHEMA = {
    "previous_run_id": pl.String,
    "dagster_run_id": pl.String,
    "recorded_at": pl.Datetime("us"),
}
EMPTY_REPORT = REPORT_SCHEMA | RUN_SCHEMA


def _has_reports(conn) -> bool:
    """Whether the file has the table (a file of an older layout opened read-only may not)."""
    return bool(
        conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_catalog = "
            "current_database() AND table_schema = ? AND table_name = 'cluster_changes'",
            [SCHEMA],
        ).fetchone()[0]
    )


def reports(conn, part: Partition) -> pl.DataFrame:
    """The partition's change reports, oldest first: dagster_run_id, previous_run_id (None after
    a first clustering), recorded_at."""
    if not _has_reports(conn):
        return pl.DataFrame(schema=RUN_SCHEMA).select(
            "dagster_run_id", "previous_run_id", "recorded_at"
        )
    return conn.execute(
        f"SELECT dagster_run_id, any_value(previous_run_id) AS previous_run_id, "
        f"max(recorded_at) AS recorded_at FROM {SCHEMA}.cluster_changes "
        "WHERE dataset = ? AND run_config = ? GROUP BY dagster_run_id "
        "ORDER BY recorded_at, dagster_run_id",
        [part.dataset, part.run_config],
    ).pl()


def _run_id(known: list[str], given: str, part: Partition) -> str:
    """The run id `given` names: itself, or the one known id it begins (the UI's short ids)."""
    if given in known:
        return given
    matches = [run for run in known if given and run.startswith(given)]
    if len(matches) == 1:
        return matches[0]
    what = "is ambiguous among the clusterings" if matches else "names no clustering"
    raise InputError(f"run {given!r} {what} of {part} (clusterings: {', '.join(known)})")


def _report_after(runs: pl.DataFrame, since_run: str, part: Partition) -> str | None:
    """The run whose report compares with `since_run`; None if `since_run` is the latest."""
    earlier = [r for r in runs["previous_run_id"].to_list() if r is not None]
    latest = runs["dagster_run_id"][-1]
    run = _run_id(list(dict.fromkeys([*earlier, latest])), since_run, part)
    after = runs.filter(pl.col("previous_run_id") == run)
    return after["dagster_run_id"][0] if after.height else None


def changes(conn, part: Partition, since_run: str | None = None) -> pl.DataFrame:
    """The partition's latest change report, or with `since_run` the report of the clustering
    after that run (its id, or a unique beginning of it): every column of `cluster_changes` but
    dataset and run_config, emerging clusters first (`ordered`). Empty when there is no report (or
    `since_run` is the latest clustering); a run that names no clustering of the partition is an
    InputError listing those that do."""
    runs = reports(conn, part)
    if runs.height == 0:
        if since_run is not None:
            raise InputError(f"{part} has no change reports: no clustering to compare with")
        return pl.DataFrame(schema=EMPTY_REPORT)
    run = runs["dagster_run_id"][-1] if since_run is None else _report_after(runs, since_run, part)
    report = conn.execute(
        f"SELECT * EXCLUDE (dataset, run_config) FROM {SCHEMA}.cluster_changes "
        "WHERE dataset = ? AND run_config = ? AND dagster_run_id = ?",
        [part.dataset, part.run_config, run],
    ).pl()
    return ordered(report)


def size_history(conn, part: Partition, level_name: str, cluster_id: int) -> pl.DataFrame:
    """The cluster's size in every published full clustering that reported it, oldest first:
    dagster_run_id, recorded_at, event, size, share (0 in the run it vanished). Empty for a
    cluster no report holds."""
    if not _has_reports(conn):
        return pl.DataFrame(schema=HISTORY_SCHEMA)
    return conn.execute(
        f"SELECT {', '.join(HISTORY_SCHEMA)} FROM {SCHEMA}.cluster_changes "
        "WHERE dataset = ? AND run_config = ? AND level_name = ? AND cluster_id = ? "
        "ORDER BY recorded_at, dagster_run_id",
        [part.dataset, part.run_config, level_name, cluster_id],
    ).pl()
