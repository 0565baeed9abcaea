"""DuckDB storage: one schema, every result table keyed by (dataset, run_config).

Each partition is replaced in one transaction (delete its rows, insert the new ones), so a failed
write leaves the previous result in place. Vectors are stored as FLOAT[d] arrays; embeddings live
once per (model, text hash) in a content-addressed store table per dimension.
"""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import numpy as np
import polars as pl

SCHEMA = "clustering"

TABLES = {
    "texts": """
        dataset VARCHAR NOT NULL, run_config VARCHAR NOT NULL, row_idx INTEGER NOT NULL,
        text_id VARCHAR, text VARCHAR NOT NULL, text_hash VARCHAR NOT NULL, duplicate_of INTEGER,
        source_file VARCHAR, ground_truth VARCHAR, metadata JSON""",
    "embeddings": """
        dataset VARCHAR NOT NULL, run_config VARCHAR NOT NULL, row_idx INTEGER NOT NULL,
        text_hash VARCHAR NOT NULL, model VARCHAR NOT NULL, dim INTEGER NOT NULL""",
    "projections": """
        dataset VARCHAR NOT NULL, run_config VARCHAR NOT NULL, row_idx INTEGER NOT NULL,
        cluster_space FLOAT[] NOT NULL, map_x FLOAT NOT NULL, map_y FLOAT NOT NULL,
        input_hash VARCHAR NOT NULL""",
    "assignments": """
        dataset VARCHAR NOT NULL, run_config VARCHAR NOT NULL, row_idx INTEGER NOT NULL,
        text_hash VARCHAR NOT NULL, level INTEGER NOT NULL, level_name VARCHAR NOT NULL,
        cluster_id INTEGER NOT NULL, membership FLOAT NOT NULL, noise BOOLEAN NOT NULL,
        moved_to_nest BOOLEAN NOT NULL""",
    "cluster_centroids": """
        dataset VARCHAR NOT NULL, run_config VARCHAR NOT NULL, level INTEGER NOT NULL,
        level_name VARCHAR NOT NULL, cluster_id INTEGER NOT NULL, size BIGINT NOT NULL,
        centroid FLOAT[] NOT NULL, radius FLOAT NOT NULL""",
    "cluster_lineage": """
        dataset VARCHAR NOT NULL, run_config VARCHAR NOT NULL, level INTEGER NOT NULL,
        level_name VARCHAR NOT NULL, cluster_id INTEGER, previous_cluster_id INTEGER,
        event VARCHAR NOT NULL, shared_texts BIGINT NOT NULL, share_of_new DOUBLE,
        share_of_previous DOUBLE, dagster_run_id VARCHAR, recorded_at TIMESTAMP NOT NULL""",
    "cluster_labels": """
        dataset VARCHAR NOT NULL, run_config VARCHAR NOT NULL, level INTEGER NOT NULL,
        level_name VARCHAR NOT NULL, cluster_id INTEGER NOT NULL, size BIGINT NOT NULL,
        label VARCHAR NOT NULL, keywords VARCHAR[], examples VARCHAR[], labeler VARCHAR NOT NULL""",
    "hierarchy": """
        dataset VARCHAR NOT NULL, run_config VARCHAR NOT NULL, node_id VARCHAR NOT NULL,
        parent_id VARCHAR, level INTEGER NOT NULL, level_name VARCHAR NOT NULL,
        cluster_id INTEGER NOT NULL, size BIGINT NOT NULL, share DOUBLE NOT NULL,
        n_children INTEGER NOT NULL, label VARCHAR NOT NULL, keywords VARCHAR[], path VARCHAR,
        position INTEGER NOT NULL""",
    "materializations": """
        dataset VARCHAR NOT NULL, run_config VARCHAR NOT NULL, asset VARCHAR NOT NULL,
        dagster_run_id VARCHAR, params_hash VARCHAR NOT NULL, code_version VARCHAR NOT NULL,
        input_hash VARCHAR, rows BIGINT NOT NULL, seconds DOUBLE NOT NULL, params JSON NOT NULL,
        stats JSON, materialized_at TIMESTAMP NOT NULL""",
    "incremental_assignments": """
        dataset VARCHAR NOT NULL, run_config VARCHAR NOT NULL, text_id VARCHAR,
        text VARCHAR NOT NULL, text_hash VARCHAR NOT NULL, source_file VARCHAR,
        level INTEGER NOT NULL, level_name VARCHAR NOT NULL, cluster_id INTEGER NOT NULL,
        confidence FLOAT NOT NULL, fits BOOLEAN NOT NULL, map_x FLOAT, map_y FLOAT""",
    "embedding_models": "model VARCHAR PRIMARY KEY, dim INTEGER NOT NULL",
    "cluster_summaries": """
        dataset VARCHAR NOT NULL, run_config VARCHAR NOT NULL, alias VARCHAR NOT NULL,
        level_name VARCHAR NOT NULL, cluster_id INTEGER NOT NULL, size BIGINT NOT NULL,
        title VARCHAR NOT NULL, summary VARCHAR NOT NULL, category VARCHAR, coherence INTEGER,
        keywords VARCHAR[], examples VARCHAR[], labeler VARCHAR NOT NULL,
        fallback BOOLEAN NOT NULL, settings_hash VARCHAR NOT NULL""",
    "merged_hierarchy": """
        dataset VARCHAR NOT NULL, run_config VARCHAR NOT NULL, alias VARCHAR NOT NULL,
        node_id VARCHAR NOT NULL, parent_id VARCHAR, level INTEGER NOT NULL,
        level_name VARCHAR NOT NULL, cluster_id INTEGER NOT NULL, size BIGINT NOT NULL,
        share DOUBLE NOT NULL, n_children INTEGER NOT NULL, title VARCHAR NOT NULL,
        summary VARCHAR NOT NULL, keywords VARCHAR[], path VARCHAR, position INTEGER NOT NULL,
        method VARCHAR NOT NULL, assigned_by VARCHAR, fallback BOOLEAN NOT NULL""",
    "llm_calls": """
        cache_key VARCHAR PRIMARY KEY, model VARCHAR NOT NULL, task VARCHAR NOT NULL,
        params JSON NOT NULL, prompt_hash VARCHAR NOT NULL, answer JSON NOT NULL,
        calls INTEGER NOT NULL, prompt_tokens BIGINT, completion_tokens BIGINT, cost_usd DOUBLE,
        created_at TIMESTAMP NOT NULL""",
}


# One row per Dagster run and partition: what it materialised, with which code, how long each took.
RUNS_VIEW = f"""
CREATE OR REPLACE VIEW {SCHEMA}.runs AS
SELECT dagster_run_id, dataset, run_config, any_value(params_hash) AS params_hash,
       any_value(code_version) AS code_version, min(materialized_at) AS first_materialized_at,
       max(materialized_at) AS last_materialized_at, round(sum(seconds), 2) AS seconds,
       map(list(asset ORDER BY materialized_at), list(round(seconds, 2) ORDER BY materialized_at))
           AS stage_seconds,
       map(list(asset ORDER BY materialized_at), list(rows ORDER BY materialized_at)) AS stage_rows
FROM {SCHEMA}.materializations GROUP BY ALL
"""


@dataclass(frozen=True)
class Partition:
    dataset: str
    run_config: str


def connect(path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(path))


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    if conn.execute("SELECT current_database()").fetchone()[0] == SCHEMA:
        raise ValueError(
            f"a DuckDB file named {SCHEMA}.duckdb makes '{SCHEMA}.table' ambiguous: rename the file"
        )
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    for name, columns in TABLES.items():
        conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.{name} ({columns})")
    conn.execute(RUNS_VIEW)


@contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    conn.execute("BEGIN TRANSACTION")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def replace_partition(conn, table: str, part: Partition, frame: pl.DataFrame) -> None:
    """Delete the partition's rows of `table` and insert `frame`; call inside `transaction`."""
    conn.execute(
        f"DELETE FROM {SCHEMA}.{table} WHERE dataset = ? AND run_config = ?",
        [part.dataset, part.run_config],
    )
    append_rows(conn, table, part, frame)


def append_rows(conn, table: str, part: Partition, frame: pl.DataFrame) -> None:
    """Insert `frame` as rows of the partition (columns matched by name)."""
    conn.register("_frame", frame.to_arrow())
    try:
        conn.execute(
            f"INSERT INTO {SCHEMA}.{table} BY NAME "
            "SELECT ? AS dataset, ? AS run_config, * FROM _frame",
            [part.dataset, part.run_config],
        )
    finally:
        conn.unregister("_frame")


def replace_aliases(conn, table: str, part: Partition, frame: pl.DataFrame) -> None:
    """`replace_partition` for a table keyed by alias too: only the rows of the aliases in `frame`
    are deleted, so the partition's other aliases stay; call inside `transaction`."""
    aliases = frame["alias"].unique().to_list()
    conn.execute(
        f"DELETE FROM {SCHEMA}.{table} "
        "WHERE dataset = ? AND run_config = ? AND list_contains(?, alias)",
        [part.dataset, part.run_config, aliases],
    )
    append_rows(conn, table, part, frame)


def read_partition(conn, table: str, part: Partition, columns: str, order_by: str) -> pl.DataFrame:
    return conn.execute(
        f"SELECT {columns} FROM {SCHEMA}.{table} WHERE dataset = ? AND run_config = ? "
        f"ORDER BY {order_by}",
        [part.dataset, part.run_config],
    ).pl()


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
    """A partition whose stored projection was computed from exactly these inputs, if any."""
    row = conn.execute(
        f"SELECT dataset, run_config FROM {SCHEMA}.projections WHERE input_hash = ? LIMIT 1",
        [input_hash],
    ).fetchone()
    return Partition(*row) if row else None


def previous_clustering(conn, part: Partition) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The partition's stored assignments (level_name, text_hash, cluster_id), centroids
    (level_name, cluster_id, centroid) and the largest id each level ever used (lineage)."""
    assignments = read_partition(
        conn, "assignments", part, "level_name, text_hash, cluster_id", "level, row_idx"
    )
    centroids = read_partition(
        conn, "cluster_centroids", part, "level_name, cluster_id, centroid", "level, cluster_id"
    )
    largest = conn.execute(
        f"SELECT level_name, max(greatest(cluster_id, previous_cluster_id)) AS max_id "
        f"FROM {SCHEMA}.cluster_lineage WHERE dataset = ? AND run_config = ? GROUP BY ALL",
        [part.dataset, part.run_config],
    ).pl()
    return assignments, centroids, largest


def unassigned_texts(conn, part: Partition) -> int:
    """Texts missing a cluster at some level, or holding more than one (0 when all is well)."""
    return conn.execute(
        f"""
        WITH levels AS (
            SELECT DISTINCT level FROM {SCHEMA}.assignments WHERE dataset = $1 AND run_config = $2
        ), expected AS (
            SELECT t.row_idx, l.level FROM {SCHEMA}.texts t, levels l
            WHERE t.dataset = $1 AND t.run_config = $2
        ), counted AS (
            SELECT e.row_idx, e.level, count(a.cluster_id) AS n FROM expected e
            LEFT JOIN {SCHEMA}.assignments a ON a.dataset = $1 AND a.run_config = $2
                AND a.row_idx = e.row_idx AND a.level = e.level
            GROUP BY ALL
        )
        SELECT count(*) FILTER (WHERE n != 1) + (SELECT count(*) = 0 FROM levels)::INT FROM counted
        """,
        [part.dataset, part.run_config],
    ).fetchone()[0]


def nesting_violations(conn, part: Partition) -> int:
    """Clusters whose texts sit in more than one cluster of the level above."""
    return conn.execute(
        f"""
        SELECT count(*) FROM (
            SELECT child.level, child.cluster_id FROM {SCHEMA}.assignments child
            JOIN {SCHEMA}.assignments parent ON parent.dataset = child.dataset
                AND parent.run_config = child.run_config AND parent.row_idx = child.row_idx
                AND parent.level = child.level - 1
            WHERE child.dataset = $1 AND child.run_config = $2
            GROUP BY ALL HAVING count(DISTINCT parent.cluster_id) > 1
        )
        """,
        [part.dataset, part.run_config],
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
    conn.register("_wanted", wanted.to_arrow())
    try:
        return conn.execute(
            f"SELECT w.text_hash FROM _wanted w ANTI JOIN {store_table(dim)} s "
            "ON s.model = ? AND s.text_hash = w.text_hash",
            [model],
        ).pl()["text_hash"]
    finally:
        conn.unregister("_wanted")


def put_vectors(conn, model: str, hashes: pl.Series, vectors: np.ndarray) -> None:
    """Add vectors to the store (its own small transaction: the cache survives a failed run)."""
    dim = vectors.shape[1]
    known = model_dim(conn, model)
    if known is not None and known != dim:
        raise ValueError(f"model {model!r} returned {dim}-d vectors; the store holds {known}-d")
    frame = pl.DataFrame(
        {
            "text_hash": hashes,
            "embedding": pl.Series(vectors, dtype=pl.Array(pl.Float32, dim)),
        }
    )
    with transaction(conn):
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {store_table(dim)} "
            f"(model VARCHAR NOT NULL, text_hash VARCHAR NOT NULL, embedding FLOAT[{dim}] NOT NULL)"
        )
        conn.execute(
            f"INSERT INTO {SCHEMA}.embedding_models VALUES (?, ?) ON CONFLICT DO NOTHING",
            [model, dim],
        )
        conn.register("_vectors", frame.to_arrow())
        try:
            conn.execute(
                f"INSERT INTO {store_table(dim)} SELECT ?, v.text_hash, v.embedding FROM _vectors v "
                f"ANTI JOIN {store_table(dim)} s ON s.model = ? AND s.text_hash = v.text_hash",
                [model, model],
            )
        finally:
            conn.unregister("_vectors")


def _to_matrix(column: pl.Series) -> np.ndarray:
    """A list or array column of equal-length float vectors as an (n, d) float32 matrix."""
    if column.len() == 0:
        return np.zeros((0, 0), np.float32)
    flat = column.cast(pl.List(pl.Float32)).explode()
    return flat.to_numpy().astype(np.float32, copy=False).reshape(column.len(), -1)


def partition_vectors(conn, part: Partition) -> tuple[pl.DataFrame, np.ndarray]:
    """The partition's texts (row_idx, text, text_hash) and their stored vectors, in row order."""
    row = conn.execute(
        f"SELECT DISTINCT model, dim FROM {SCHEMA}.embeddings WHERE dataset = ? AND run_config = ?",
        [part.dataset, part.run_config],
    ).fetchall()
    if len(row) != 1:
        raise LookupError(f"no embeddings stored for {part}: materialise the embeddings first")
    model, dim = row[0]
    frame = conn.execute(
        f"SELECT e.row_idx, t.text, e.text_hash, s.embedding "
        f"FROM {SCHEMA}.embeddings e "
        f"JOIN {SCHEMA}.texts t USING (dataset, run_config, row_idx) "
        f"JOIN {store_table(dim)} s ON s.model = e.model AND s.text_hash = e.text_hash "
        "WHERE e.dataset = ? AND e.run_config = ? ORDER BY e.row_idx",
        [part.dataset, part.run_config],
    ).pl()
    return frame.drop("embedding"), _to_matrix(frame["embedding"])


def vectors_for(conn, model: str, hashes: pl.Series) -> np.ndarray:
    """Stored vectors of `model` for `hashes`, in their order (each must be stored)."""
    dim = model_dim(conn, model)
    conn.register("_wanted", pl.DataFrame({"text_hash": hashes}).with_row_index("i").to_arrow())
    try:
        frame = conn.execute(
            f"SELECT w.i, s.embedding FROM _wanted w JOIN {store_table(dim)} s "
            "ON s.model = ? AND s.text_hash = w.text_hash ORDER BY w.i",
            [model],
        ).pl()
    finally:
        conn.unregister("_wanted")
    if frame.height != len(hashes):
        raise LookupError(f"{len(hashes) - frame.height} texts have no stored {model} vector")
    return _to_matrix(frame["embedding"])


def matrix_column(frame: pl.DataFrame, column: str) -> np.ndarray:
    return _to_matrix(frame[column])
