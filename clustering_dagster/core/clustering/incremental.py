"""Incremental assignment: texts appended since the last clustering join its existing clusters.

A new text takes the cluster that its nearest clustered texts (in embedding space) vote for at the
finest level, weighted by inverse distance (`vote`, as for texts outside a fitted sample), and
that cluster's ancestors at the coarser levels, so the levels stay nested. A text farther from its cluster's centroid than the cluster's
radius (the distance that 90% of the members are within) fits no cluster well and is flagged.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from ..config.run_config import IncrementalConfig
from ..embedding.embed import normalise_rows
from ..projection.anchors import Anchors
from ..storage.store import matrix_column
from .cluster import parents
from .vote import Voters, vote


@dataclass(frozen=True)
class ClusteredLevel:
    name: str
    ids: np.ndarray  # stable cluster id per clustered text
    centroid_ids: np.ndarray  # the cluster ids of `centroids`, in order
    centroids: np.ndarray  # unit centroids in embedding space
    radius: np.ndarray  # per centroid


def appended_rows(current: pl.DataFrame, clustered: pl.DataFrame) -> pl.DataFrame:
    """Rows of `current` not in `clustered`, matching texts by hash and occurrence (the second
    copy of a text is new if the clustering saw it once)."""

    def keyed(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.with_columns(occurrence=pl.col("text_hash").cum_count().over("text_hash"))

    return (
        keyed(current)
        .join(
            keyed(clustered).select("text_hash", "occurrence"),
            on=["text_hash", "occurrence"],
            how="anti",
        )
        .drop("occurrence")
    )


def assign(
    new_vectors: np.ndarray,
    clustered_vectors: np.ndarray,
    levels: Sequence[ClusteredLevel],
    neighbours: int,
) -> tuple[pl.DataFrame, np.ndarray]:
    """One row per new text and level (level, cluster_id, confidence, fits), and the neighbour
    indices (for placing the texts on the map). `levels` are coarse first."""
    new = normalise_rows(new_vectors)
    weights, index = Anchors(normalise_rows(clustered_vectors)).nearest(new, neighbours)
    finest = levels[-1]
    n = len(finest.ids)
    voted = vote(Voters(index, weights), finest.ids, np.ones(n, np.float32), np.zeros(n, bool))
    chosen, confidence = voted.labels, voted.membership  # the winner's share of the weight
    frames = []
    ids = chosen
    for depth in range(len(levels) - 1, -1, -1):
        level = levels[depth]
        if depth < len(levels) - 1:
            parent_of = parents(levels[depth + 1].ids, level.ids)
            ids = np.array([parent_of[c] for c in ids])
            confidence = (weights * (level.ids[index] == ids[:, None])).sum(1)
        position = {c: i for i, c in enumerate(level.centroid_ids.tolist())}
        rows = np.array([position[c] for c in ids])
        distance = 1 - np.einsum("ij,ij->i", new, level.centroids[rows])
        frames.append(
            pl.DataFrame(
                {
                    "level": np.full(len(ids), depth, np.int32),
                    "level_name": level.name,
                    "cluster_id": ids.astype(np.int32),
                    "confidence": confidence.astype(np.float32),
                    "fits": distance <= level.radius[rows],
                    "row": np.arange(len(ids), dtype=np.int32),
                }
            )
        )
    return pl.concat(frames[::-1]), index


# The incremental_assignments table.
SCHEMA = {
    "text_id": pl.String,
    "text": pl.String,
    "text_hash": pl.String,
    "source_file": pl.String,
    "level": pl.Int32,
    "level_name": pl.String,
    "cluster_id": pl.Int32,
    "confidence": pl.Float32,
    "fits": pl.Boolean,
    "map_x": pl.Float64,
    "map_y": pl.Float64,
}


def clustered_levels(assignments: pl.DataFrame, centroids: pl.DataFrame) -> list[ClusteredLevel]:
    levels = []
    for (_, name), rows in assignments.group_by("level", "level_name", maintain_order=True):
        known = centroids.filter(pl.col("level_name") == name)
        levels.append(
            ClusteredLevel(
                name=name,
                ids=rows["cluster_id"].to_numpy(),
                centroid_ids=known["cluster_id"].to_numpy(),
                centroids=matrix_column(known, "centroid"),
                radius=known["radius"].to_numpy(),
            )
        )
    return levels


def assignments_table(
    new: pl.DataFrame,
    new_vectors: np.ndarray,
    vectors: np.ndarray,
    levels: list[ClusteredLevel],
    neighbours: int,
    coords: pl.DataFrame,
) -> pl.DataFrame:
    """The appended texts (`new`: text_id, text, text_hash, source_file) at every level, in
    SCHEMA, each placed on the map at the mean of its nearest clustered texts (`coords`)."""
    assigned, nearest = assign(new_vectors, vectors, levels, neighbours)
    placed = (
        new.select("text_id", "text", "text_hash", "source_file")
        .with_columns(
            map_x=coords["map_x"].to_numpy()[nearest].mean(1),
            map_y=coords["map_y"].to_numpy()[nearest].mean(1),
        )
        .with_row_index("row")
    )
    return assigned.join(placed.cast({"row": pl.Int32}), on="row").select(list(SCHEMA)).cast(SCHEMA)


def recluster_reasons(
    new_share: float, outlier_share: float, config: IncrementalConfig
) -> list[str]:
    """Why a full re-clustering is due, if it is: too many appended texts, or too many that fit
    no cluster well."""
    reasons = []
    if new_share > config.max_new_share:
        reasons.append(f"appended texts are {new_share:.0%} of the clustered ones")
    if outlier_share > config.max_outlier_share:
        reasons.append(f"{outlier_share:.0%} of them fit no cluster well")
    return reasons
