"""The privacy threshold: no cluster of fewer conversations (or users) than the run configuration
allows is shown. The texts of such clusters are protected: at every level they sit in one folded
cluster, `HIDDEN_ID`, shown as a count only, and no stage reads them for a label, a summary or a
prompt. A cluster whose remaining texts fall below the threshold is folded in turn, so every
cluster left is at or above it, at every level.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from ..clustering.cluster import Level
from ..config.run_config import PrivacyConfig
from ..errors import InputError
from ..storage.store import HIDDEN_ID

FOLDED_TITLE = "Below the privacy threshold"


def protected_rows(
    levels: Sequence[np.ndarray], users: np.ndarray | None, privacy: PrivacyConfig
) -> np.ndarray:
    """Per text, whether it belongs to a cluster below the threshold at some level (cluster ids
    per level in `levels`; `users` a user id per text, a null counting as no user, or None when
    the dataset names no users: then `min_users` does not apply)."""
    n = len(levels[0]) if levels else 0
    protected = np.zeros(n, bool)
    if not privacy.threshold:
        return protected
    while True:
        before = protected.sum()
        for labels in levels:
            frame = pl.DataFrame({"cluster": labels, "user": users}).filter(~protected)
            counts = frame.group_by("cluster").agg(
                texts=pl.len(), users=pl.col("user").drop_nulls().n_unique()
            )
            small = pl.col("texts") < privacy.min_conversations
            if users is not None and privacy.min_users:
                small |= pl.col("users") < privacy.min_users
            small = counts.filter(small)["cluster"]
            protected |= np.isin(labels, small.to_numpy())
        if protected.sum() == before:
            return protected


def visible_level(level: Level, keep: np.ndarray) -> Level:
    """The level over the rows in `keep`, its clusters numbered afresh, 0 the largest."""
    _, dense = np.unique(level.labels[keep], return_inverse=True)
    sizes = np.bincount(dense)
    rank = np.empty(len(sizes), np.int32)
    rank[np.argsort(-sizes, kind="stable")] = np.arange(len(sizes), dtype=np.int32)
    return Level(
        level.name,
        rank[dense].astype(np.int32),
        level.membership[keep],
        level.noise[keep],
        level.moved_to_nest[keep],
        level.method,
    )


@dataclass(frozen=True)
class Folded:
    """The levels over the texts that may be shown (`rows`, `vectors`: theirs), and the folded
    cluster's assignments and centroids, with the counts per level (see `hidden_counts`)."""

    levels: list[Level]
    keep: np.ndarray  # per text: shown (not folded)
    rows: pl.DataFrame
    vectors: np.ndarray
    assignments: pl.DataFrame | None
    centroids: pl.DataFrame | None
    hidden: pl.DataFrame

    def add_to(self, assignments: pl.DataFrame, centroids: pl.DataFrame) -> tuple:
        """The visible levels' assignments and centroids with the folded cluster's added."""
        if self.assignments is None:
            return assignments, centroids
        return (
            pl.concat([assignments, self.assignments.cast(assignments.schema)]).sort(
                "level", "row_idx"
            ),
            pl.concat([centroids, self.centroids.cast(centroids.schema)]).sort(
                "level", "cluster_id"
            ),
        )


def fold_levels(
    levels: list[Level],
    rows: pl.DataFrame,
    vectors: np.ndarray,
    users: pl.Series | None,
    privacy: PrivacyConfig,
) -> Folded:
    """Every level with the clusters below the threshold folded away (`rows`: row_idx, text_hash
    per text; `users`: a user id per text, or None)."""
    named = users is not None and users.len() > 0 and users.null_count() < users.len()
    user_ids = users.to_numpy() if named else None
    protected = protected_rows([level.labels for level in levels], user_ids, privacy)
    if protected.all():
        raise InputError(
            f"every cluster holds fewer than {privacy.min_conversations} conversations"
            + (f" or {privacy.min_users} users" if privacy.min_users else "")
            + ": nothing could be shown; lower the privacy threshold or add data"
        )
    keep = ~protected
    hidden = hidden_counts(levels, protected)
    if not protected.any():
        return Folded(levels, keep, rows, vectors, None, None, hidden)
    return Folded(
        [visible_level(level, keep) for level in levels],
        keep,
        rows.filter(pl.Series(keep)),
        vectors[keep],
        folded_assignments(rows.filter(pl.Series(protected)), levels),
        folded_centroids(vectors[protected], levels),
        hidden,
    )


def visible_levels(assignments: pl.DataFrame) -> tuple[list[pl.DataFrame], pl.Series]:
    """The assignments (ordered by level, then row) per level without the folded cluster's
    texts, and per text whether it is kept."""
    levels = assignments.partition_by("level", maintain_order=True)
    keep = levels[-1]["cluster_id"] != HIDDEN_ID
    return [level.filter(keep) for level in levels], keep


def hidden_counts(levels: Sequence[Level], protected: np.ndarray) -> pl.DataFrame:
    """Per level: the clusters folded away (all their texts protected) and the texts folded."""
    rows = []
    for depth, level in enumerate(levels):
        kept = np.unique(level.labels[~protected])
        folded = np.setdiff1d(np.unique(level.labels[protected]), kept)
        rows.append((depth, level.name, len(folded), int(protected.sum())))
    return pl.DataFrame(
        rows,
        schema={
            "level": pl.Int32,
            "level_name": pl.String,
            "clusters": pl.Int64,
            "texts": pl.Int64,
        },
        orient="row",
    )


def folded_assignments(rows: pl.DataFrame, levels: Sequence[Level]) -> pl.DataFrame:
    """Assignment rows of the protected texts (`rows`: row_idx, text_hash): the folded cluster at
    every level."""
    return pl.concat(
        [
            rows.select(
                "row_idx",
                "text_hash",
                level=pl.lit(depth, pl.Int32),
                level_name=pl.lit(level.name),
                cluster_id=pl.lit(HIDDEN_ID, pl.Int32),
                membership=pl.lit(0.0, pl.Float32),
                noise=pl.lit(False),
                moved_to_nest=pl.lit(False),
            )
            for depth, level in enumerate(levels)
        ]
    )


def folded_centroids(vectors: np.ndarray, levels: Sequence[Level]) -> pl.DataFrame:
    """The folded cluster's centroid row at every level (`vectors`: the protected texts')."""
    mean = vectors.mean(0)
    centroid = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
    return pl.DataFrame(
        {
            "level": np.arange(len(levels), dtype=np.int32),
            "level_name": [level.name for level in levels],
            "cluster_id": np.full(len(levels), HIDDEN_ID, np.int32),
            "size": np.full(len(levels), len(vectors), np.int64),
            "centroid": pl.Series([centroid.tolist()] * len(levels), dtype=pl.List(pl.Float32)),
            "radius": np.zeros(len(levels), np.float32),
        }
    )


def with_folded_nodes(tree: pl.DataFrame, hidden: pl.DataFrame, total: int) -> pl.DataFrame:
    """The tree (a hierarchy or one alias's merged tree) with one folded node per level when
    texts are protected, chained top to bottom, after the other nodes; shares are of `total`
    texts. `hidden`: see `hidden_counts` (a tree level it does not name, such as an LLM-merged
    parent level, is said to fold as many clusters as the finest level)."""
    tree = tree.with_columns(share=pl.col("size") / max(total, 1))
    texts = int(hidden["texts"].max() or 0) if hidden.height else 0
    if texts == 0:
        return tree
    names = tree.unique("level").sort("level")["level_name"].to_list()
    clusters = dict(zip(hidden["level_name"], hidden["clusters"], strict=True))
    finest = int(hidden.sort("level")["clusters"][-1])
    defaults = {"label": FOLDED_TITLE, "title": FOLDED_TITLE, "keywords": [], "method": "privacy"}
    rows = []
    for depth, name in enumerate(names):
        node = {
            "node_id": f"{name}/{HIDDEN_ID}",
            "parent_id": None if depth == 0 else f"{names[depth - 1]}/{HIDDEN_ID}",
            "level": depth,
            "level_name": name,
            "cluster_id": HIDDEN_ID,
            "size": texts,
            "share": texts / max(total, 1),
            "n_children": 0 if depth == len(names) - 1 else 1,
            "path": " > ".join([FOLDED_TITLE] * (depth + 1)),
            "summary": f"{texts} texts in {clusters.get(name, finest)} clusters below the "
            "privacy threshold: only their count is shown.",
            "fallback": False,
        }
        rows.append({column: node.get(column, defaults.get(column)) for column in tree.columns})
    tree = pl.concat([tree, pl.DataFrame(rows, schema=tree.schema, orient="row")])
    if "position" in tree.columns:
        tree = tree.with_columns(position=pl.int_range(pl.len(), dtype=pl.Int32))
    return tree
