"""What a search reads from the results file, once per published result: the partition's
distinct texts with their stored vectors, the centroid of every node of its tree and the vectors
of the titles and summaries an LLM wrote, held in an in-memory DuckDB as Arrow tables."""

import json
from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from ..config.run_config import EmbeddingConfig
from ..data_in.ingest import text_hash
from ..embedding.embed import cache_key
from ..errors import InputError
from ..storage.store import SCHEMA, Partition, store_table, visible_version
from .reading import NamedTree, leaf_assignments, load_tree, tree_centroids

# The tables an index is read from: a new version of any of them means reading it again.
INPUT_TABLES = ("texts", "embeddings", "assignments", "cluster_centroids", "hierarchy",
                "merged_hierarchy")  # fmt: skip


def partition_model(conn, part: Partition) -> tuple[str, int]:
    """The embedding model (cache key) and dimension of the partition's stored vectors."""
    rows = conn.execute(
        f"SELECT DISTINCT model, dim FROM {SCHEMA}.embeddings WHERE dataset = ? AND run_config = ?",
        [part.dataset, part.run_config],
    ).fetchall()
    if len(rows) != 1:
        raise InputError(f"{part} has no embeddings: materialise it fully before searching it")
    return rows[0]


def embedding_config(conn, part: Partition) -> EmbeddingConfig:
    """The embedding settings that made the partition's vectors (from the materialisation log),
    so that a query lands in the same space."""
    model, _ = partition_model(conn, part)
    logged = conn.execute(
        f"SELECT params->'embedding' FROM {SCHEMA}.materializations "
        "WHERE dataset = ? AND run_config = ? AND asset = 'embeddings' "
        "ORDER BY materialized_at DESC",
        [part.dataset, part.run_config],
    ).fetchall()
    for (params,) in logged:
        config = EmbeddingConfig(**json.loads(params))
        if cache_key(config) == model:
            return config
    backend, name = model.split(":", 1)
    return EmbeddingConfig(backend=backend, model=name)


def input_versions(conn, part: Partition) -> tuple:
    """The published versions of the tables an index reads, and the partition's last edit
    (cheap: a lookup per table)."""
    return (*(visible_version(conn, table, part) for table in INPUT_TABLES), last_edit(conn, part))


def last_edit(conn, part: Partition) -> int | None:
    """The id of the partition's latest edit (None: never edited, or a file older than edits)."""
    try:
        return conn.execute(
            f"SELECT max(edit_id) FROM {SCHEMA}.edits WHERE dataset = ? AND run_config = ?",
            [part.dataset, part.run_config],
        ).fetchone()[0]
    except duckdb.CatalogException:
        return None


@dataclass(frozen=True)
class IndexInputs:
    config: EmbeddingConfig
    dim: int
    tree: NamedTree
    texts: pl.DataFrame  # row_idx, text_id, text, text_hash, cluster_id (leaf level); no duplicates
    vectors: pa.Table  # text_hash, embedding FLOAT[d]
    centroids: dict[str, np.ndarray]
    descriptions: pl.DataFrame  # node_id, description, vector (None where nobody embedded it)


@dataclass(frozen=True)
class SearchIndex:
    config: EmbeddingConfig
    tree: NamedTree
    texts: pl.DataFrame
    memory: duckdb.DuckDBPyConnection  # tables vectors(text_hash, embedding), centroids and
    # descriptions (node_id, vector)


def read_index_inputs(conn, part: Partition, alias: str | None) -> IndexInputs:
    """Everything an index holds, read from the results file (the views: published rows)."""
    config = embedding_config(conn, part)
    model, dim = partition_model(conn, part)
    tree = load_tree(conn, part, alias)
    where = {"dataset": part.dataset, "run_config": part.run_config}
    texts = conn.execute(
        f"""
        SELECT t.row_idx, t.text_id, t.text, t.text_hash, a.cluster_id
        FROM {SCHEMA}.texts t JOIN {leaf_assignments(conn, tree)} a USING (row_idx)
        WHERE t.dataset = $dataset AND t.run_config = $run_config AND t.duplicate_of IS NULL
        ORDER BY t.row_idx
        """,
        where,
    ).pl()
    vectors = conn.execute(
        f"""
        SELECT s.text_hash, s.embedding FROM {store_table(dim)} s
        SEMI JOIN (SELECT text_hash FROM {SCHEMA}.texts
                   WHERE dataset = $dataset AND run_config = $run_config) t USING (text_hash)
        WHERE s.model = $model
        """,
        where | {"model": model},
    ).to_arrow_table()
    described = tree.nodes.filter(pl.col("method") == "llm").select(
        "node_id", description=pl.format("{}: {}", "name", "summary")
    )
    described = described.with_columns(text_hash=text_hash(described["description"]))
    stored = conn.execute(
        f"SELECT text_hash, embedding::FLOAT[] AS vector FROM {store_table(dim)} "
        "WHERE model = ? AND text_hash IN (SELECT unnest(?::VARCHAR[]))",
        [model, described["text_hash"].to_list()],
    ).pl()
    descriptions = described.join(stored, on="text_hash", how="left").drop("text_hash")
    return IndexInputs(config, dim, tree, texts, vectors, tree_centroids(conn, tree), descriptions)


def build_index(inputs: IndexInputs, encode: Callable[[list[str]], np.ndarray]) -> SearchIndex:
    """The in-memory index; descriptions no run embedded (the top level's) are encoded now."""
    missing = inputs.descriptions.filter(pl.col("vector").is_null())
    vectors = dict(
        zip(inputs.descriptions["node_id"], inputs.descriptions["vector"].to_list(), strict=True)
    )
    if missing.height:
        encoded = encode(missing["description"].to_list())
        vectors |= dict(zip(missing["node_id"], encoded.tolist(), strict=True))
    memory = duckdb.connect()
    memory.register("vectors", inputs.vectors)
    for name, by_node in (("centroids", inputs.centroids), ("descriptions", vectors)):
        memory.register(name, _node_vectors(by_node, inputs.dim))
    return SearchIndex(inputs.config, inputs.tree, inputs.texts, memory)


def _node_vectors(by_node: dict, dim: int) -> pa.Table:
    frame = pl.DataFrame(
        {
            "node_id": pl.Series(list(by_node), dtype=pl.String),
            "vector": pl.Series(
                [np.asarray(v, np.float32) for v in by_node.values()],
                dtype=pl.Array(pl.Float32, dim),
            ),
        }
    )
    return frame.to_arrow()
