"""DuckDB storage: one schema for readers, one for versioned rows, shared caches.

Every result row carries the version (the Dagster run id) that wrote it, in schema
`clustering_store`. A run writes only its own version, so nothing a reader sees changes while it
runs; `clustering.published` points each partition's tables at one version, and the views of schema
`clustering` show only those rows. A run publishes everything it wrote in one transaction when its
last asset finishes (see `snapshots`), so a reader sees a partition's complete previous result or
its complete new one. The embedding vectors, the LLM answers and the materialisation log are shared
append-only tables that survive any failure. With CLUSTERING_DUCKLAKE set the same SQL runs on a
DuckLake several machines write at once (`lake`); every write transaction goes through
`in_transaction`, which runs it again whole when it conflicts with another writer's (in a lake).
"""

import json
import random
import re
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import duckdb
import numpy as np
import polars as pl

from ..batches import STORE_ROWS as VECTOR_BATCH_ROWS
from ..pipeline import WRITTEN_BY
from .lake import Lake, claim, is_lake

T = TypeVar("T")

# A short connection to the store with its schema in place, opened on each call.
Connect = Callable[[], AbstractContextManager]

SCHEMA = "clustering"
STORE = "clustering_store"
# 1: result tables without versions; 2: before ADDED_COLUMNS; 3: before privacy; 4: before
# cluster_changes; 5: before curation
LAYOUT = 6

# The folded cluster of the privacy threshold (`core.privacy.threshold`): the texts of clusters too
# small to show sit in it at every level, and no view shows them.
HIDDEN_ID = -2

VERSIONED = {
    "texts": """
        row_idx INTEGER NOT NULL, text_id VARCHAR, text VARCHAR NOT NULL,
        text_hash VARCHAR NOT NULL, duplicate_of INTEGER, source_file VARCHAR,
        ground_truth VARCHAR, metadata JSON""",
    # conversation datasets: the facets of each conversation (row_idx as in texts)
    "facets": """
        row_idx INTEGER NOT NULL, conversation_id VARCHAR NOT NULL, request VARCHAR,
        first_user_turn VARCHAR, task VARCHAR, language VARCHAR, concerning TINYINT,
        user_turns INTEGER NOT NULL, assistant_turns INTEGER NOT NULL, turns INTEGER NOT NULL,
        chars INTEGER NOT NULL, fallback BOOLEAN NOT NULL""",
    # the owner's rows as read, before scrubbing, and who wrote them: never in a view
    "private_rows": """
        row_idx INTEGER NOT NULL, user_id VARCHAR, original JSON""",
    # per level, the clusters and texts folded below the privacy threshold
    "hidden_clusters": """
        level INTEGER NOT NULL, level_name VARCHAR NOT NULL, clusters BIGINT NOT NULL,
        texts BIGINT NOT NULL""",
    "embeddings": """
        row_idx INTEGER NOT NULL, text_hash VARCHAR NOT NULL, model VARCHAR NOT NULL,
        dim INTEGER NOT NULL""",
    "projections": """
        row_idx INTEGER NOT NULL, cluster_space FLOAT[] NOT NULL, map_x FLOAT NOT NULL,
        map_y FLOAT NOT NULL, input_hash VARCHAR NOT NULL""",
    "assignments": """
        row_idx INTEGER NOT NULL, text_hash VARCHAR NOT NULL, level INTEGER NOT NULL,
        level_name VARCHAR NOT NULL, cluster_id INTEGER NOT NULL, membership FLOAT NOT NULL,
        noise BOOLEAN NOT NULL, moved_to_nest BOOLEAN NOT NULL""",
    "cluster_centroids": """
        level INTEGER NOT NULL, level_name VARCHAR NOT NULL, cluster_id INTEGER NOT NULL,
        size BIGINT NOT NULL, centroid FLOAT[] NOT NULL, radius FLOAT NOT NULL""",
    "cluster_lineage": """
        level INTEGER NOT NULL, level_name VARCHAR NOT NULL, cluster_id INTEGER,
        previous_cluster_id INTEGER, event VARCHAR NOT NULL, shared_texts BIGINT NOT NULL,
        share_of_new DOUBLE, share_of_previous DOUBLE, dagster_run_id VARCHAR,
        recorded_at TIMESTAMP NOT NULL""",
    # per full clustering, its clusters against the previous one (`core/clustering/changes.py`)
    "cluster_changes": """
        level INTEGER NOT NULL, level_name VARCHAR NOT NULL, cluster_id INTEGER NOT NULL,
        event VARCHAR NOT NULL, previous_cluster_ids INTEGER[], size BIGINT NOT NULL,
        previous_size BIGINT, new_texts BIGINT NOT NULL, share DOUBLE NOT NULL,
        previous_share DOUBLE, share_change DOUBLE, growth DOUBLE, emerging BOOLEAN NOT NULL,
        previous_label VARCHAR, previous_run_id VARCHAR, dagster_run_id VARCHAR,
        recorded_at TIMESTAMP NOT NULL""",
    "cluster_labels": """
        level INTEGER NOT NULL, level_name VARCHAR NOT NULL, cluster_id INTEGER NOT NULL,
        size BIGINT NOT NULL, label VARCHAR NOT NULL, keywords VARCHAR[], examples VARCHAR[],
        labeler VARCHAR NOT NULL""",
    "hierarchy": """
        node_id VARCHAR NOT NULL, parent_id VARCHAR, level INTEGER NOT NULL,
        level_name VARCHAR NOT NULL, cluster_id INTEGER NOT NULL, size BIGINT NOT NULL,
        share DOUBLE NOT NULL, n_children INTEGER NOT NULL, label VARCHAR NOT NULL,
        keywords VARCHAR[], path VARCHAR, position INTEGER NOT NULL""",
    "incremental_assignments": """
        text_id VARCHAR, text VARCHAR NOT NULL, text_hash VARCHAR NOT NULL, source_file VARCHAR,
        level INTEGER NOT NULL, level_name VARCHAR NOT NULL, cluster_id INTEGER NOT NULL,
        confidence FLOAT NOT NULL, fits BOOLEAN NOT NULL, map_x FLOAT, map_y FLOAT""",
    "cluster_summaries": """
        alias VARCHAR NOT NULL, level_name VARCHAR NOT NULL, cluster_id INTEGER NOT NULL,
        size BIGINT NOT NULL, title VARCHAR NOT NULL, summary VARCHAR NOT NULL, category VARCHAR,
        coherence INTEGER, keywords VARCHAR[], examples VARCHAR[], labeler VARCHAR NOT NULL,
        fallback BOOLEAN NOT NULL, settings_hash VARCHAR NOT NULL""",
    "merged_hierarchy": """
        alias VARCHAR NOT NULL, node_id VARCHAR NOT NULL, parent_id VARCHAR,
        level INTEGER NOT NULL, level_name VARCHAR NOT NULL, cluster_id INTEGER NOT NULL,
        size BIGINT NOT NULL, share DOUBLE NOT NULL, n_children INTEGER NOT NULL,
        title VARCHAR NOT NULL, summary VARCHAR NOT NULL, keywords VARCHAR[], path VARCHAR,
        position INTEGER NOT NULL, method VARCHAR NOT NULL, assigned_by VARCHAR,
        fallback BOOLEAN NOT NULL""",
}

# Columns added since layout 2, added to every file's tables (an older file's rows take the
# default; a literal string, as DuckLake takes no other default when adding a column).
ADDED_COLUMNS = {
    "projections": "fitted BOOLEAN DEFAULT 'true'",
    # under a privacy threshold: shown only once clustered, and not in a folded cluster
    "texts": "private BOOLEAN DEFAULT 'false'",
}

# Versioned tables no view shows: they stay in schema `clustering_store`, for the owner.
UNSHOWN = {"private_rows"}

# Append-only: every published version's rows stay (the others are cleaned up like any table's).
HISTORY = {"cluster_lineage", "cluster_changes"}

SHARED = {
    "materializations": """
        dataset VARCHAR NOT NULL, run_config VARCHAR NOT NULL, asset VARCHAR NOT NULL,
        dagster_run_id VARCHAR, params_hash VARCHAR NOT NULL, code_version VARCHAR NOT NULL,
        input_hash VARCHAR, rows BIGINT NOT NULL, seconds DOUBLE NOT NULL, params JSON NOT NULL,
        stats JSON, materialized_at TIMESTAMP NOT NULL""",
    "embedding_models": "model VARCHAR PRIMARY KEY, dim INTEGER NOT NULL",
    "llm_calls": """
        cache_key VARCHAR PRIMARY KEY, model VARCHAR NOT NULL, task VARCHAR NOT NULL,
        params JSON NOT NULL, prompt_hash VARCHAR NOT NULL, answer JSON NOT NULL,
        calls INTEGER NOT NULL, prompt_tokens BIGINT, completion_tokens BIGINT, cost_usd DOUBLE,
        created_at TIMESTAMP NOT NULL""",
    # the version of each partition's table that readers see
    "published": """
        dataset VARCHAR NOT NULL, run_config VARCHAR NOT NULL, table_name VARCHAR NOT NULL,
        version VARCHAR NOT NULL, published_at TIMESTAMP NOT NULL""",
    # every publication: the tables a run published, and those it withdrew as stale
    "publications": """
        dataset VARCHAR NOT NULL, run_config VARCHAR NOT NULL, version VARCHAR NOT NULL,
        tables VARCHAR[] NOT NULL, withdrawn VARCHAR[] NOT NULL, published_at TIMESTAMP NOT NULL""",
}

# People's edits of a partition's tree (core.curation): each edit once, its texts, and how it
# stood against each published version; the curated trees and text moves in force (rewritten with
# every edit and every publication, in the same transaction).
CURATION = {
    "edits": """
        edit_id BIGINT NOT NULL, dataset VARCHAR NOT NULL, run_config VARCHAR NOT NULL,
        kind VARCHAR NOT NULL, level_name VARCHAR, cluster_id INTEGER, node_id VARCHAR,
        value JSON NOT NULL, author VARCHAR NOT NULL, note VARCHAR, made_at TIMESTAMP NOT NULL,
        made_on VARCHAR""",
    # role: moved (the texts a move or split moves) or member (the named nodes' texts when made)
    "edit_texts": "edit_id BIGINT NOT NULL, role VARCHAR NOT NULL, text_hash VARCHAR NOT NULL",
    "edit_status": """
        dataset VARCHAR NOT NULL, run_config VARCHAR NOT NULL, version VARCHAR NOT NULL,
        edit_id BIGINT NOT NULL, status VARCHAR NOT NULL, reason VARCHAR, holders JSON,
        checked_at TIMESTAMP NOT NULL""",
    "curated_hierarchy": """
        dataset VARCHAR NOT NULL, run_config VARCHAR NOT NULL, alias VARCHAR NOT NULL,
        version VARCHAR NOT NULL, node_id VARCHAR NOT NULL, parent_id VARCHAR,
        level INTEGER NOT NULL, level_name VARCHAR NOT NULL, cluster_id INTEGER NOT NULL,
        size BIGINT NOT NULL, share DOUBLE NOT NULL, n_children INTEGER NOT NULL,
        name VARCHAR, summary VARCHAR, keywords VARCHAR[], position INTEGER NOT NULL,
        method VARCHAR NOT NULL, named_by VARCHAR NOT NULL, placed_by VARCHAR NOT NULL,
        tags VARCHAR[] NOT NULL, flag VARCHAR, edit_ids BIGINT[] NOT NULL""",
    "curated_moves": """
        dataset VARCHAR NOT NULL, run_config VARCHAR NOT NULL, version VARCHAR NOT NULL,
        level_name VARCHAR NOT NULL, row_idx INTEGER NOT NULL, cluster_id INTEGER NOT NULL""",
}

# The finest level of every text as people left it (the levels above follow `parent_id` in
# curated_hierarchy).
CURATED_ASSIGNMENTS_VIEW = f"""
CREATE OR REPLACE VIEW {SCHEMA}.curated_assignments AS
SELECT a.dataset, a.run_config, a.row_idx, a.text_hash, a.level, a.level_name,
       coalesce(m.cluster_id, a.cluster_id) AS cluster_id, m.row_idx IS NOT NULL AS moved_by_person
FROM {SCHEMA}.assignments a
LEFT JOIN {SCHEMA}.curated_moves m ON m.dataset = a.dataset AND m.run_config = a.run_config
  AND m.level_name = a.level_name AND m.row_idx = a.row_idx
"""

# What each run has written so far, per asset: unpublished until the run's last asset is done.
STAGED = """
    dataset VARCHAR NOT NULL, run_config VARCHAR NOT NULL, version VARCHAR NOT NULL,
    asset VARCHAR NOT NULL, tables VARCHAR[] NOT NULL, written_at TIMESTAMP NOT NULL"""

# One row per Dagster run and partition: what it materialised, with which code, how long each took,
# and whether its results were published.
RUNS_VIEW = f"""
CREATE OR REPLACE VIEW {SCHEMA}.runs AS
SELECT m.dagster_run_id, m.dataset, m.run_config, any_value(m.params_hash) AS params_hash,
       any_value(m.code_version) AS code_version, min(m.materialized_at) AS first_materialized_at,
       max(m.materialized_at) AS last_materialized_at, round(sum(m.seconds), 2) AS seconds,
       map(list(m.asset ORDER BY m.materialized_at), list(round(m.seconds, 2) ORDER BY
           m.materialized_at)) AS stage_seconds,
       map(list(m.asset ORDER BY m.materialized_at), list(m.rows ORDER BY m.materialized_at))
           AS stage_rows,
       bool_or(p.version IS NOT NULL) AS published
FROM {SCHEMA}.materializations m
LEFT JOIN {SCHEMA}.publications p
  ON p.dataset = m.dataset AND p.run_config = m.run_config AND p.version = m.dagster_run_id
GROUP BY m.dagster_run_id, m.dataset, m.run_config
"""


@dataclass(frozen=True)
class Partition:
    """A dataset x run configuration; inside a run, `version` is the run's id."""

    dataset: str
    run_config: str
    version: str | None = None

    def __str__(self) -> str:
        return f"{self.dataset}|{self.run_config}"


class MissingResult(LookupError):
    """A stage's input was never materialised for the partition."""

    def __init__(self, table: str, part: Partition):
        super().__init__(
            f"partition {part} has no {table} yet: materialise {WRITTEN_BY[table]} "
            "(and the assets above it) first"
        )


class DatabaseBusy(RuntimeError):
    """Another process kept the DuckDB file locked for longer than we may wait."""


LOCK_POLL_S = 0.25


def connect(path, lock_timeout_s: float = 0.0, on_wait=None) -> duckdb.DuckDBPyConnection:
    """A read-write connection: to the lake when CLUSTERING_DUCKLAKE is set (`path` unused),
    else to the file at `path`. While another process holds the file (DuckDB allows one writer,
    and a read-only connection elsewhere blocks writers too) retry for up to `lock_timeout_s`,
    telling `on_wait` once who holds it; then raise DatabaseBusy."""
    lake = Lake.configured()
    if lake is not None:
        return lake.connect()
    deadline = time.monotonic() + lock_timeout_s
    told = False
    while True:
        try:
            return duckdb.connect(str(path))
        except duckdb.IOException as err:
            if "lock" not in str(err).lower():
                raise
            holder = _lock_holder(str(err))
            if time.monotonic() >= deadline:
                raise DatabaseBusy(
                    f"{path} stayed locked by {holder} for {lock_timeout_s:.0f} s: close that "
                    "connection (read from a copy, or with short read-only connections: see the "
                    "README) or raise CLUSTERING_LOCK_TIMEOUT_S"
                ) from None
            if not told and on_wait is not None:
                on_wait(f"{path} is locked by {holder}; waiting up to {lock_timeout_s:.0f} s")
                told = True
            time.sleep(LOCK_POLL_S)


def _lock_holder(message: str) -> str:
    """'<program> (PID n)' from DuckDB's lock error, or 'another process'."""
    found = re.search(r"held in (.+?\(PID \d+\))", message)
    return found.group(1) if found else "another process"


def _exists(conn, schema: str, name: str) -> str | None:
    """'BASE TABLE', 'VIEW' or None."""
    row = conn.execute(
        "SELECT table_type FROM information_schema.tables "
        "WHERE table_catalog = current_database() AND table_schema = ? AND table_name = ?",
        [schema, name],
    ).fetchone()
    return row[0] if row else None


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    """Create (or upgrade) the schemas, tables and views; a no-op once they are in place."""
    if conn.execute("SELECT current_database()").fetchone()[0] in (SCHEMA, STORE):
        raise ValueError(
            f"a DuckDB file named {SCHEMA}.duckdb or {STORE}.duckdb makes '{SCHEMA}.table' "
            "ambiguous: rename the file"
        )
    if not _current_layout(conn):
        in_transaction(conn, lambda: _create_schema(conn))


def _current_layout(conn) -> bool:
    return (
        _exists(conn, SCHEMA, "layout") is not None
        and conn.execute(f"SELECT max(version) FROM {SCHEMA}.layout").fetchone()[0] == LAYOUT
    )


def _create_schema(conn) -> None:
    if _current_layout(conn):  # another process made it while this one waited
        return
    lake = is_lake(conn)
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {STORE}")
    for name, columns in (SHARED | CURATION).items():
        if lake:  # no keys in DuckLake: inserts into these tables are anti-joins
            columns = columns.replace(" PRIMARY KEY", " NOT NULL")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.{name} ({columns})")
    conn.execute(f"CREATE TABLE IF NOT EXISTS {STORE}.staged ({STAGED})")
    for name, columns in VERSIONED.items():
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {STORE}.{name} (dataset VARCHAR NOT NULL, "
            f"run_config VARCHAR NOT NULL, version VARCHAR NOT NULL, {columns})"
        )
        if name in ADDED_COLUMNS:
            conn.execute(
                f"ALTER TABLE {STORE}.{name} ADD COLUMN IF NOT EXISTS {ADDED_COLUMNS[name]}"
            )
        if _exists(conn, SCHEMA, name) == "BASE TABLE":
            _migrate_unversioned(conn, name)
    for name in sorted(set(VERSIONED) - UNSHOWN, key=lambda n: (n in PROTECTED, n != "texts")):
        conn.execute(_view(name))
    conn.execute(RUNS_VIEW)
    conn.execute(CURATED_ASSIGNMENTS_VIEW)
    conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.layout (version INTEGER NOT NULL)")
    conn.execute(f"INSERT INTO {SCHEMA}.layout VALUES (?)", [LAYOUT])


def _view(table: str) -> str:
    """A view of the published rows of `table`, without what the privacy threshold hides."""
    if table in HISTORY:
        shown = f"{SCHEMA}.publications p ON"
    else:
        shown = f"{SCHEMA}.published p ON p.table_name = '{table}' AND"
    rows = (
        f"(SELECT r.* EXCLUDE (version) FROM {STORE}.{table} r SEMI JOIN {shown} "
        "p.dataset = r.dataset AND p.run_config = r.run_config AND p.version = r.version)"
    )
    if table in PROTECTED:
        rows = f"({PROTECTED[table](rows, f'{SCHEMA}.texts', f'{SCHEMA}.assignments')})"
    return f"CREATE OR REPLACE VIEW {SCHEMA}.{table} AS SELECT * FROM {rows}"


def _shown_texts(texts: str, _, assignments: str) -> str:
    """Texts a person may see: all, unless under a privacy threshold; then only those clustered
    outside the folded cluster."""
    return (
        f"SELECT r.* FROM {texts} r WHERE NOT r.private UNION ALL "
        f"SELECT r.* FROM {texts} r SEMI JOIN {assignments} a ON a.dataset = r.dataset "
        "AND a.run_config = r.run_config AND a.row_idx = r.row_idx AND a.level = 0 "
        f"AND a.cluster_id <> {HIDDEN_ID} WHERE r.private"
    )


def _of_shown_texts(rows: str, texts: str, _) -> str:
    """Per-text rows (facets, vectors, map positions) of the texts a person may see."""
    return (
        f"SELECT f.* FROM {rows} f SEMI JOIN {texts} t ON t.dataset = f.dataset "
        "AND t.run_config = f.run_config AND t.row_idx = f.row_idx"
    )


def _not_folded(rows: str, *_) -> str:
    return f"SELECT * FROM {rows} WHERE cluster_id <> {HIDDEN_ID}"


# Tables with texts, per-text rows or the folded cluster's centroid: how people's views filter
# them.
PROTECTED = {
    "texts": _shown_texts,
    "facets": _of_shown_texts,
    "embeddings": _of_shown_texts,
    "projections": _of_shown_texts,
    "incremental_assignments": _not_folded,
    "cluster_centroids": _not_folded,
}


def shown_relation(conn, table: str, part: Partition) -> str:
    """`relation` of a table in PROTECTED with only the rows a person may see."""
    assignments = relation(conn, "assignments", part, required=False)
    texts = f"({_shown_texts(relation(conn, 'texts', part), None, assignments)})"
    return f"({PROTECTED[table](relation(conn, table, part), texts, assignments)})"


def _migrate_unversioned(conn, table: str) -> None:
    """Move a table of layout 1 into the store as the published version 'layout1'."""
    conn.execute(
        f"INSERT INTO {STORE}.{table} BY NAME SELECT *, 'layout1' AS version FROM {SCHEMA}.{table}"
    )
    conn.execute(
        f"INSERT INTO {SCHEMA}.published SELECT DISTINCT dataset, run_config, ?, 'layout1', "
        f"now() FROM {SCHEMA}.{table}",
        [table],
    )
    conn.execute(f"DROP TABLE {SCHEMA}.{table}")


@contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """BEGIN, the block, COMMIT; on any failure, the COMMIT's included, ROLLBACK."""
    conn.execute("BEGIN TRANSACTION")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        _roll_back(conn)
        raise


@contextmanager
def registered(conn: duckdb.DuckDBPyConnection, name: str, frame: pl.DataFrame) -> Iterator[None]:
    """`frame` readable as the table `name` on `conn` within the block."""
    conn.register(name, frame.to_arrow())
    try:
        yield
    finally:
        conn.unregister(name)


def _roll_back(conn) -> None:
    """ROLLBACK, unless the failure already ended the transaction (a failed COMMIT does)."""
    try:
        conn.execute("ROLLBACK")
    except duckdb.TransactionException as err:
        if "no transaction is active" not in str(err):
            raise


# A write transaction that conflicts with another writer's (the lake's optimistic concurrency) is
# run again, up to CONFLICT_TRIES times in all, after a pause growing from CONFLICT_PAUSE_S.
CONFLICT_TRIES = 12
CONFLICT_PAUSE_S = (0.05, 4.0)


def in_transaction(conn: duckdb.DuckDBPyConnection, write: Callable[[], T]) -> T:
    """`write()` in one transaction, committed; returns what it returns. When the commit (or a
    statement) conflicts with another writer's transaction (`duckdb.TransactionException`: in the
    lake, two runs publishing at once), everything is rolled back and `write` runs again from the
    start, so it must only depend on what it reads inside the transaction (a step replaces its
    own version's rows). Other errors roll back and propagate at once."""
    attempt = 1
    while True:
        try:
            with transaction(conn):
                return write()
        except duckdb.TransactionException:
            if attempt >= CONFLICT_TRIES:
                raise
        first, longest = CONFLICT_PAUSE_S
        time.sleep(min(longest, first * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5))
        attempt += 1


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def visible_version(conn, table: str, part: Partition) -> str | None:
    """The version of `table` a stage of the partition reads: its own run's, if that run wrote
    the table, else the published one (None: never materialised)."""
    if part.version is not None:
        own = conn.execute(
            f"SELECT 1 FROM {STORE}.staged WHERE dataset = ? AND run_config = ? AND version = ? "
            "AND list_contains(tables, ?)",
            [part.dataset, part.run_config, part.version, table],
        ).fetchone()
        if own:
            return part.version
    row = conn.execute(
        f"SELECT version FROM {SCHEMA}.published "
        "WHERE dataset = ? AND run_config = ? AND table_name = ?",
        [part.dataset, part.run_config, table],
    ).fetchone()
    return row[0] if row else None


def relation(conn, table: str, part: Partition, required: bool = True) -> str:
    """SQL (a parenthesised subquery) for the partition's rows of `table` that its stage sees,
    with the table's columns; raises MissingResult if there are none and `required`."""
    version = visible_version(conn, table, part)
    if version is None and required:
        raise MissingResult(table, part)
    return (
        f"(SELECT * EXCLUDE (version) FROM {STORE}.{table} WHERE dataset = "
        f"{_literal(part.dataset)} AND run_config = {_literal(part.run_config)} "
        f"AND version = {_literal(version or '')})"
    )


def read_partition(
    conn, table: str, part: Partition, columns: str, order_by: str, required: bool = True
) -> pl.DataFrame:
    return conn.execute(
        f"SELECT {columns} FROM {relation(conn, table, part, required)} t ORDER BY {order_by}"
    ).pl()


def write_version(conn, table: str, part: Partition, frame: pl.DataFrame) -> None:
    """Make `frame` the run's rows of `table` for the partition (replacing any it wrote before,
    as a retried step does); call inside `transaction`."""
    conn.execute(
        f"DELETE FROM {STORE}.{table} WHERE dataset = ? AND run_config = ? AND version = ?",
        [part.dataset, part.run_config, part.version],
    )
    with registered(conn, "_frame", frame):
        conn.execute(
            f"INSERT INTO {STORE}.{table} BY NAME "
            "SELECT ? AS dataset, ? AS run_config, ? AS version, * FROM _frame",
            [part.dataset, part.run_config, part.version],
        )


def write_aliases(conn, table: str, part: Partition, frame: pl.DataFrame) -> None:
    """`write_version` for a table keyed by alias: the aliases in `frame` are replaced, the
    partition's other visible aliases are carried over unchanged; call inside `transaction`."""
    carried = read_partition(conn, table, part, "*", "alias", required=False).filter(
        ~pl.col("alias").is_in(frame["alias"].unique().implode())
    )
    write_version(conn, table, part, pl.concat([carried.select(frame.columns), frame]))


@dataclass(frozen=True)
class MaterializationRecord:
    """One row of `materializations`: what ran, with which parameters and code, how long."""

    asset: str
    run_id: str | None
    params: dict
    params_hash: str
    code_version: str
    rows: int
    seconds: float
    input_hash: str | None = None
    stats: dict | None = None


def record_materialization(conn, part: Partition, record: MaterializationRecord) -> None:
    conn.execute(
        f"INSERT INTO {SCHEMA}.materializations BY NAME SELECT ? AS dataset, ? AS run_config, "
        "? AS asset, ? AS dagster_run_id, ? AS params_hash, ? AS code_version, ? AS input_hash, "
        "? AS rows, ? AS seconds, ? AS params, ? AS stats, ? AS materialized_at",
        [
            part.dataset,
            part.run_config,
            record.asset,
            record.run_id,
            record.params_hash,
            record.code_version,
            record.input_hash,
            record.rows,
            record.seconds,
            json.dumps(record.params),
            json.dumps(record.stats or {}),
            datetime.now(UTC).replace(tzinfo=None),
        ],
    )


def find_projection(conn, input_hash: str) -> Partition | None:
    """A published projection computed from exactly these inputs, in any partition, if any."""
    row = conn.execute(
        f"SELECT r.dataset, r.run_config FROM {STORE}.projections r SEMI JOIN {SCHEMA}.published "
        "p ON p.table_name = 'projections' AND p.dataset = r.dataset "
        "AND p.run_config = r.run_config AND p.version = r.version WHERE r.input_hash = ? LIMIT 1",
        [input_hash],
    ).fetchone()
    return Partition(*row) if row else None


def previous_clustering(conn, part: Partition) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The partition's published assignments (level_name, text_hash, cluster_id), centroids
    (level_name, cluster_id, centroid) and the largest id each level ever used (lineage), without
    the privacy threshold's folded cluster."""
    published = Partition(part.dataset, part.run_config)
    assignments = read_partition(
        conn, "assignments", published, "level_name, text_hash, cluster_id", "level, row_idx", False
    ).filter(pl.col("cluster_id") != HIDDEN_ID)
    centroids = read_partition(
        conn,
        "cluster_centroids",
        published,
        "level_name, cluster_id, centroid",
        "level, cluster_id",
        False,
    ).filter(pl.col("cluster_id") != HIDDEN_ID)
    largest = conn.execute(
        f"SELECT level_name, max(greatest(cluster_id, previous_cluster_id)) AS max_id "
        f"FROM {SCHEMA}.cluster_lineage WHERE dataset = ? AND run_config = ? GROUP BY ALL",
        [part.dataset, part.run_config],
    ).pl()
    return assignments, centroids, largest


def previous_sizes(conn, part: Partition) -> tuple[str | None, pl.DataFrame]:
    """The run that published the partition's clusters (None: never clustered) and their sizes
    (level_name, cluster_id, size, label: the keyword label, if still published), the privacy
    threshold's folded cluster included."""
    published = Partition(part.dataset, part.run_config)
    version = visible_version(conn, "cluster_centroids", published)
    sizes = read_partition(
        conn,
        "cluster_centroids",
        published,
        "level_name, cluster_id, size",
        "level, cluster_id",
        False,
    )
    labels = read_partition(
        conn, "cluster_labels", published, "level_name, cluster_id, label", "level", False
    )
    return version, sizes.join(labels, on=["level_name", "cluster_id"], how="left")


def unassigned_texts(conn, part: Partition) -> int:
    """Texts missing a cluster at some level, or holding more than one (0 when all is well)."""
    assignments = relation(conn, "assignments", part)
    return conn.execute(
        f"""
        WITH levels AS (SELECT DISTINCT level FROM {assignments}),
        expected AS (
            SELECT t.row_idx, l.level FROM {relation(conn, "texts", part)} t, levels l
        ), counted AS (
            SELECT e.row_idx, e.level, count(a.cluster_id) AS n FROM expected e
            LEFT JOIN {assignments} a ON a.row_idx = e.row_idx AND a.level = e.level
            GROUP BY ALL
        )
        SELECT count(*) FILTER (WHERE n != 1) + (SELECT count(*) = 0 FROM levels)::INT FROM counted
        """
    ).fetchone()[0]


def nesting_violations(conn, part: Partition) -> int:
    """Clusters whose texts sit in more than one cluster of the level above."""
    assignments = relation(conn, "assignments", part)
    return conn.execute(
        f"""
        SELECT count(*) FROM (
            SELECT child.level, child.cluster_id FROM {assignments} child
            JOIN {assignments} parent ON parent.row_idx = child.row_idx
                AND parent.level = child.level - 1
            GROUP BY ALL HAVING count(DISTINCT parent.cluster_id) > 1
        )
        """
    ).fetchone()[0]


# --- the content-addressed embedding store ---------------------------------------------------


def store_table(dim: int) -> str:
    return f"{SCHEMA}.embedding_store_{dim}"


def model_dim(conn, model: str) -> int | None:
    row = conn.execute(
        f"SELECT dim FROM {SCHEMA}.embedding_models WHERE model = ?", [model]
    ).fetchone()
    return row[0] if row else None


def missing_hashes(conn, model: str, hashes: pl.Series) -> pl.Series:
    """The hashes in `hashes` that have no stored vector for `model` (order kept, unique)."""
    wanted = pl.DataFrame({"text_hash": hashes}).unique(maintain_order=True)
    dim = model_dim(conn, model)
    if dim is None:
        return wanted["text_hash"]
    with registered(conn, "_wanted", wanted):
        return conn.execute(
            f"SELECT w.text_hash FROM _wanted w ANTI JOIN {store_table(dim)} s "
            "ON s.model = ? AND s.text_hash = w.text_hash",
            [model],
        ).pl()["text_hash"]


def put_vectors(conn, model: str, hashes: pl.Series, vectors: np.ndarray) -> None:
    """Add vectors to the store (its own small transaction: the cache survives a failed run)."""
    dim = vectors.shape[1]
    known = model_dim(conn, model)
    if known is not None and known != dim:
        raise ValueError(f"model {model!r} returned {dim}-d vectors; the store holds {known}-d")
    # a variable-length list, cast by DuckDB: its Arrow scan of fixed-size lists is ~1.7x slower
    frame = pl.DataFrame(
        {
            "text_hash": hashes,
            "embedding": pl.Series(vectors, dtype=pl.Array(pl.Float32, dim)).cast(
                pl.List(pl.Float32)
            ),
        }
    )
    lake = is_lake(conn)
    rows = _lake_vectors(dim) if lake else store_table(dim)
    vector = "v.embedding::FLOAT[]" if lake else f"v.embedding::FLOAT[{dim}]"

    def write() -> None:
        _create_vector_store(conn, dim, lake)
        conn.execute(
            f"INSERT INTO {SCHEMA}.embedding_models SELECT ?, ? "
            f"WHERE NOT EXISTS (SELECT 1 FROM {SCHEMA}.embedding_models WHERE model = ?)",
            [model, dim, model],
        )
        claim(conn)  # two writers of the same new vectors at once: the later runs again
        with registered(conn, "_vectors", frame):
            conn.execute(
                f"INSERT INTO {rows} SELECT ?, v.text_hash, {vector} FROM _vectors v "
                f"ANTI JOIN {rows} s ON s.model = ? AND s.text_hash = v.text_hash",
                [model, model],
            )

    in_transaction(conn, write)


def _lake_vectors(dim: int) -> str:
    """The lake's table of d-dimensional vectors (FLOAT[]: DuckLake has no FLOAT[d])."""
    return f"{STORE}.embedding_vectors_{dim}"


def _create_vector_store(conn, dim: int, lake: bool) -> None:
    """The store of d-dimensional vectors: a table of FLOAT[d] in a file; in the lake a table of
    FLOAT[] and, under the file's name, a view of it as FLOAT[d] for every reader."""
    columns = "model VARCHAR NOT NULL, text_hash VARCHAR NOT NULL, embedding FLOAT[{}] NOT NULL"
    if not lake:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {store_table(dim)} ({columns.format(dim)})")
        return
    if _exists(conn, SCHEMA, f"embedding_store_{dim}"):
        return
    conn.execute(f"CREATE TABLE IF NOT EXISTS {_lake_vectors(dim)} ({columns.format('')})")
    conn.execute(
        f"CREATE VIEW IF NOT EXISTS {store_table(dim)} AS SELECT model, text_hash, "
        f"embedding::FLOAT[{dim}] AS embedding FROM {_lake_vectors(dim)}"
    )


def _to_matrix(column: pl.Series) -> np.ndarray:
    """A list or array column of equal-length float vectors as an (n, d) float32 matrix."""
    if column.len() == 0:
        return np.zeros((0, 0), np.float32)
    flat = column.cast(pl.List(pl.Float32)).explode()
    return flat.to_numpy().astype(np.float32, copy=False).reshape(column.len(), -1)


def _stream_matrix(result, n: int, dim: int) -> np.ndarray:
    """The `embedding` column of a DuckDB result, batch by batch, as an (n, dim) float32 matrix
    (no per-row Python objects, and never more than one batch besides the matrix)."""
    matrix = np.empty((n, dim), np.float32)
    start = 0
    for batch in result.to_arrow_reader(VECTOR_BATCH_ROWS):
        values = batch.column("embedding").flatten().to_numpy(zero_copy_only=False)
        matrix[start : start + batch.num_rows] = values.reshape(batch.num_rows, dim)
        start += batch.num_rows
    return matrix


def partition_model(conn, part: Partition) -> tuple[str, int]:
    """The model (store key) and dimension of the partition's vectors."""
    row = conn.execute(f"SELECT DISTINCT model, dim FROM {relation(conn, 'embeddings', part)}")
    found = row.fetchall()
    if len(found) != 1:
        raise MissingResult("embeddings", part)
    return found[0]


def partition_vectors(conn, part: Partition) -> tuple[pl.DataFrame, np.ndarray]:
    """The partition's texts (row_idx, text, text_hash) and their stored vectors, in row order."""
    embeddings = relation(conn, "embeddings", part)
    model, dim = partition_model(conn, part)
    joined = (
        f"FROM {embeddings} e JOIN {relation(conn, 'texts', part)} t USING (row_idx) "
        f"JOIN {store_table(dim)} s ON s.model = e.model AND s.text_hash = e.text_hash "
        "ORDER BY e.row_idx"
    )
    rows = conn.execute(f"SELECT e.row_idx, t.text, e.text_hash {joined}").pl()
    vectors = _stream_matrix(conn.execute(f"SELECT s.embedding {joined}"), rows.height, dim)
    return rows, vectors


def vectors_for(conn, model: str, hashes: pl.Series) -> np.ndarray:
    """Stored vectors of `model` for `hashes`, in their order (each must be stored)."""
    dim = model_dim(conn, model)
    with registered(conn, "_wanted", pl.DataFrame({"text_hash": hashes}).with_row_index("i")):
        frame = conn.execute(
            f"SELECT w.i, s.embedding FROM _wanted w JOIN {store_table(dim)} s "
            "ON s.model = ? AND s.text_hash = w.text_hash ORDER BY w.i",
            [model],
        ).pl()
    if frame.height != len(hashes):
        raise LookupError(f"{len(hashes) - frame.height} texts have no stored {model} vector")
    return _to_matrix(frame["embedding"])


def matrix_column(frame: pl.DataFrame, column: str) -> np.ndarray:
    return _to_matrix(frame[column])
