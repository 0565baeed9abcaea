"""Semantic search: a query embedded with the partition's own model, ranked by cosine similarity
inside DuckDB against the stored FLOAT[d] vectors of its texts, the centroids of its clusters and,
where an LLM named them, the vectors of their titles and summaries.

A `Searcher` reads a partition once per published result (`search_index`: its distinct texts,
their vectors, every node's centroid and the description vectors) into an in-memory DuckDB, so
each query is an exact scan of memory, not of the file: about n x d multiply-adds (README,
Explore the results: the measured latency, and what to use past that).
"""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from ..config.run_config import EmbeddingConfig
from ..embedding.embed import Encoder, cache_key, make_encoder, normalise_rows
from ..storage.store import Partition
from .reading import read_only, vector_sql
from .search_index import SearchIndex, build_index, input_versions, read_index_inputs


class QueryEncoder:
    """Unit query vectors, one loaded model per embedding configuration. A local model runs on
    one torch thread: a query is one short text, and one thread is fastest (20-40 ms for MiniLM on
    a busy 2-core machine, against 50-400 ms with two threads fighting other processes)."""

    def __init__(self, make: Callable[[EmbeddingConfig], Encoder] = make_encoder):
        self._make = make
        self._encoders: dict[str, Encoder] = {}

    def __call__(self, config: EmbeddingConfig, texts: list[str]) -> np.ndarray:
        key = cache_key(config)
        if key not in self._encoders:
            if config.backend == "sentence-transformers":
                import torch

                torch.set_num_threads(1)
            self._encoders[key] = self._make(config)
        return normalise_rows(self._encoders[key](texts))


def search_texts(
    index: SearchIndex,
    query: np.ndarray,
    limit: int,
    within: str | None = None,
    only: pl.Series | None = None,
) -> pl.DataFrame:
    """The `limit` distinct texts most similar to the unit `query` vector (row_idx, text_id, text,
    score, then node_d/name_d per depth), optionally only those inside the node `within` and
    among the row_idx `only`."""
    scope = ""
    if within is not None or only is not None:
        inside = index.texts
        if within is not None:
            inside = inside.filter(pl.col("cluster_id").is_in(index.tree.leaves(within)))
        if only is not None:
            inside = inside.filter(pl.col("row_idx").is_in(only.implode()))
        index.memory.register("_scope", inside.select("text_hash").to_arrow())
        scope = "WHERE text_hash IN (SELECT text_hash FROM _scope)"
    try:
        best = index.memory.execute(
            f"SELECT text_hash, array_cosine_similarity(embedding, {vector_sql(query)}) AS score "
            f"FROM vectors {scope} ORDER BY score DESC, text_hash LIMIT ?",
            [limit],
        ).pl()
    finally:
        if scope:
            index.memory.unregister("_scope")
    hits = best.join(index.texts, on="text_hash", maintain_order="left")
    return hits.join(
        index.tree.leaf_chains(), on="cluster_id", how="left", maintain_order="left"
    ).select("row_idx", "text_id", "text", "score", pl.col("^(node|name)_\\d+$"))


def search_clusters(index: SearchIndex, query: np.ndarray, limit: int, within: str | None = None):
    """The `limit` nodes most similar to the unit `query` vector, by the better of their centroid
    and (LLM-named nodes) their title and summary; `within` keeps the nodes below one node."""
    literal = vector_sql(query)
    scores = index.memory.execute(
        f"SELECT node_id, array_cosine_similarity(vector, {literal}) AS score, "
        "'centroid' AS matched_by FROM centroids UNION ALL "
        f"SELECT node_id, array_cosine_similarity(vector, {literal}), 'title and summary' "
        "FROM descriptions"
    ).pl()
    nodes = index.tree.nodes
    if within is not None:
        chains = index.tree.leaf_chains().filter(pl.any_horizontal(pl.col("^node_\\d+$") == within))
        below = set(chains.select(pl.col("^node_\\d+$")).unpivot()["value"].drop_nulls())
        nodes = nodes.filter(pl.col("node_id").is_in(below) & (pl.col("node_id") != within))
    best = (
        scores.sort(["score", "node_id"], descending=[True, False])
        .unique("node_id", keep="first", maintain_order=True)
        .join(
            nodes.select("node_id", "level_name", "name", "size", "share"),
            on="node_id",
            maintain_order="left",
        )
    )
    return best.head(limit)


class Searcher:
    """Answers queries over the partitions of one results file. Each partition's index is read
    on first use and again only when a run publishes a new result; between queries no connection
    to the file is held (so runs can write), and models load with no connection open."""

    def __init__(self, database: Path, encoder: QueryEncoder | None = None):
        self.database = Path(database)
        self.encoder = encoder or QueryEncoder()
        self._indexes: dict = {}

    def current(self, conn, part: Partition, alias: str | None = None) -> SearchIndex | None:
        """The partition's index in memory if no run has published since it was read."""
        cached = self._indexes.get((part, alias))
        return cached[1] if cached is not None and cached[0] == input_versions(conn, part) else None

    def index(self, part: Partition, alias: str | None = None) -> SearchIndex:
        with read_only(self.database) as conn:
            versions = input_versions(conn, part)
            cached = self._indexes.get((part, alias))
            if cached is not None and cached[0] == versions:
                return cached[1]
            inputs = read_index_inputs(conn, part, alias)
        index = build_index(inputs, lambda texts: self.encoder(inputs.config, texts))
        self._indexes[part, alias] = (versions, index)
        return index

    def embed(self, index: SearchIndex, query: str) -> np.ndarray:
        return self.encoder(index.config, [query])[0]
