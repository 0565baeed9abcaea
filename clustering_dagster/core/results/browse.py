"""Reading a tree a page at a time, for the explorer (`clustering-dagster explore`): a node's texts
one page at a time (in the dataset's order, counted and paged in SQL, so a page of a cluster of
100,000 texts reads 50), the clusters nearest a node by centroid, and the folded node of the
privacy threshold, which is shown as a count only.

Texts are read through `shown_relation`, so texts below the privacy threshold never appear, and
the folded node's own texts are never read."""

from dataclasses import dataclass

import numpy as np
import polars as pl

from ..storage.store import HIDDEN_ID, shown_relation
from .reading import NamedTree, leaf_assignments

PER_PAGE = 50


def is_folded(node: dict) -> bool:
    """Whether the node is the folded node of the privacy threshold (shown as its count only)."""
    return node["cluster_id"] == HIDDEN_ID


@dataclass(frozen=True)
class TextPage:
    """One page of a node's texts: `rows` (row_idx, text_id, text, membership, noise) in the
    dataset's order, `total` texts in the node, page `page` (from 1) of `pages`."""

    rows: pl.DataFrame
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def first(self) -> int:
        """The 1-based number of the page's first text (0 on an empty page)."""
        return (self.page - 1) * self.per_page + 1 if self.rows.height else 0


def node_text_page(conn, tree: NamedTree, node_id: str, page: int = 1, per_page: int = PER_PAGE):
    """Page `page` (from 1; past the last page: the last) of the texts a person may see in the
    node, `per_page` to a page, with their count; the folded node has none to show."""
    node = tree.node(node_id)
    empty = pl.DataFrame(
        schema={
            "row_idx": pl.Int32,
            "text_id": pl.String,
            "text": pl.String,
            "membership": pl.Float32,
            "noise": pl.Boolean,
        }
    )
    if is_folded(node):
        return TextPage(empty, 0, 1, per_page)
    part = tree.part
    scope = f"""
        FROM {leaf_assignments(conn, tree)} a
        JOIN {shown_relation(conn, "texts", part)} t USING (row_idx)
        WHERE list_contains($ids, a.cluster_id)
    """
    params = {"ids": tree.leaves(node_id)}
    total = conn.execute(f"SELECT count(*) {scope}", params).fetchone()[0]
    pages = max(1, -(-total // per_page))
    page = min(max(1, page), pages)
    rows = conn.execute(
        f"SELECT t.row_idx, t.text_id, t.text, a.membership, a.noise {scope} "
        "ORDER BY t.row_idx LIMIT $limit OFFSET $offset",
        params | {"limit": per_page, "offset": (page - 1) * per_page},
    ).pl()
    return TextPage(rows if rows.height else empty, int(total), page, per_page)


def nearest_nodes(
    tree: NamedTree, centroids: dict[str, np.ndarray], node_id: str, limit: int = 8
) -> pl.DataFrame:
    """The `limit` other nodes of the node's level most similar to it by centroid (cosine),
    best first, with their names and sizes; none for the folded node, which is never one."""
    node = tree.node(node_id)
    columns = ["node_id", "level_name", "cluster_id", "name", "size", "share"]
    peers = tree.nodes.filter(
        (pl.col("level") == node["level"])
        & (pl.col("node_id") != node_id)
        & (pl.col("cluster_id") != HIDDEN_ID)
    ).select(columns)
    if is_folded(node) or peers.height == 0 or node_id not in centroids:
        return peers.head(0).with_columns(similarity=pl.lit(None, pl.Float64))
    peers = peers.filter(pl.col("node_id").is_in(list(centroids)))
    matrix = np.stack([centroids[other] for other in peers["node_id"]])
    similarity = matrix @ centroids[node_id]
    return (
        peers.with_columns(similarity=pl.Series(similarity.astype(np.float64)))
        .sort(["similarity", "node_id"], descending=[True, False])
        .head(limit)
    )
