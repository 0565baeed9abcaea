"""Incremental assignment: texts appended since the last clustering join its existing clusters.

A new text takes the cluster that its nearest clustered texts (cosine, in embedding space) vote
for at the finest level, weighted by similarity, and that cluster's ancestors at the coarser
levels, so the levels stay nested. A text farther from its cluster's centroid than the cluster's
radius (the distance that 90% of the members are within) fits no cluster well and is flagged.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from .cluster import parents
from .embed import normalise_rows

# New texts compared with all clustered texts at once: bounds memory to CHUNK x clustered texts.
CHUNK = 2048


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


def _neighbour_votes(new: np.ndarray, known: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and cosine similarities of the k most similar known vectors, per new vector."""
    k = min(k, len(known))
    indices, similarities = [], []
    for start in range(0, len(new), CHUNK):
        scores = new[start : start + CHUNK] @ known.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        indices.append(top)
        similarities.append(np.take_along_axis(scores, top, axis=1))
    return np.concatenate(indices), np.concatenate(similarities)


def assign(
    new_vectors: np.ndarray,
    clustered_vectors: np.ndarray,
    levels: Sequence[ClusteredLevel],
    neighbours: int,
) -> tuple[pl.DataFrame, np.ndarray]:
    """One row per new text and level (level, cluster_id, confidence, fits), and the neighbour
    indices (for placing the texts on the map). `levels` are coarse first."""
    new = normalise_rows(new_vectors)
    known = normalise_rows(clustered_vectors)
    index, similarity = _neighbour_votes(new, known, neighbours)
    weights = np.maximum(similarity, 0) + 1e-9
    finest = levels[-1]
    votes = finest.ids[index]
    candidates = np.unique(votes)
    tally = np.stack([(weights * (votes == c)).sum(1) for c in candidates], axis=1)
    chosen = candidates[tally.argmax(1)]
    confidence = tally.max(1) / weights.sum(1)
    frames = []
    ids = chosen
    for depth in range(len(levels) - 1, -1, -1):
        level = levels[depth]
        if depth < len(levels) - 1:
            parent_of = parents(levels[depth + 1].ids, level.ids)
            ids = np.array([parent_of[c] for c in ids])
            confidence = (weights * (level.ids[index] == ids[:, None])).sum(1) / weights.sum(1)
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
