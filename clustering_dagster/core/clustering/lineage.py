"""Stable cluster identity across re-clusterings, and the lineage of every cluster.

New clusters are matched to the previous clustering of the same level by the texts they share
(text hashes). A clear match (each holds more than half of the other's shared texts) keeps the
previous id. A new cluster made mostly of new texts may keep the id of an unmatched previous
cluster whose centroid is nearly the same. Everything else gets a fresh id, and the lineage says
what happened: kept, split, merged, new or vanished.
"""

from dataclasses import dataclass

import numpy as np
import polars as pl

from ..embedding.embed import normalise_rows
from .cluster import Level, embedding_centroids

# A link between a new and a previous cluster counts when it carries this share of either side.
SUBSTANTIAL = 0.2
# Centroid cosine similarity at which a cluster of mostly new texts keeps a previous id.
CENTROID_MATCH = 0.9

LINEAGE_SCHEMA = {
    "cluster_id": pl.Int32,
    "previous_cluster_id": pl.Int32,
    "event": pl.String,
    "shared_texts": pl.Int64,
    "share_of_new": pl.Float64,
    "share_of_previous": pl.Float64,
}


@dataclass(frozen=True)
class Previous:
    """The previous clustering of one level: a stable id per text hash, and cluster centroids."""

    hashes: np.ndarray
    ids: np.ndarray
    centroids: dict[int, np.ndarray]  # id -> unit centroid in embedding space (may be empty)
    next_id: int  # the smallest id never used at this level


@dataclass(frozen=True)
class Matching:
    stable_ids: np.ndarray  # stable id per dense new cluster
    lineage: pl.DataFrame


def _overlap(new: np.ndarray, hashes: np.ndarray, previous: Previous) -> tuple[np.ndarray, list]:
    """Counts of shared texts between dense new clusters and previous ids (first hash wins)."""
    old_ids = sorted(set(previous.ids.tolist()) | set(previous.centroids))
    old_index = {old: i for i, old in enumerate(old_ids)}
    _, first_prev = np.unique(previous.hashes, return_index=True)
    prev_by_hash = dict(
        zip(previous.hashes[first_prev].tolist(), previous.ids[first_prev].tolist(), strict=True)
    )
    overlap = np.zeros((int(new.max()) + 1, len(old_ids)), np.int64)
    _, first_new = np.unique(hashes, return_index=True)
    for i in first_new:
        old = prev_by_hash.get(hashes[i])
        if old is not None:
            overlap[new[i], old_index[old]] += 1
    return overlap, old_ids


def _centroid_match(
    cluster_vector: np.ndarray | None, previous: Previous, taken: set
) -> int | None:
    if cluster_vector is None:
        return None
    best, best_similarity = None, CENTROID_MATCH
    for old, centroid in previous.centroids.items():
        similarity = float(cluster_vector @ centroid)
        if old not in taken and similarity >= best_similarity:
            best, best_similarity = old, similarity
    return best


def match_clusters(
    new: np.ndarray, hashes: np.ndarray, embeddings: np.ndarray | None, previous: Previous
) -> Matching:
    """Stable ids for the dense clusters `new` (one per text, texts keyed by `hashes`)."""
    overlap, old_ids = _overlap(new, hashes, previous)
    k = overlap.shape[0]
    sizes = np.bincount(new, minlength=k)
    share_new = overlap / np.maximum(overlap.sum(1, keepdims=True), 1)
    share_old = overlap / np.maximum(overlap.sum(0, keepdims=True), 1)
    kept = (share_new > 0.5) & (share_old > 0.5)
    links = (overlap > 0) & ((share_new >= SUBSTANTIAL) | (share_old >= SUBSTANTIAL)) & ~kept
    stable = np.full(k, -1, np.int64)
    rows = []

    def row(c, o, event):
        stable_id = None if c is None else int(stable[c])
        previous_id = None if o is None else int(old_ids[o])
        shared = 0 if c is None or o is None else int(overlap[c, o])
        rows.append(
            (
                stable_id,
                previous_id,
                event,
                shared,
                None if c is None or o is None else float(share_new[c, o]),
                None if c is None or o is None else float(share_old[c, o]),
            )
        )

    for c, o in zip(*np.nonzero(kept), strict=True):
        stable[c] = old_ids[o]
    taken = set(stable[stable >= 0].tolist())
    unit = normalise_rows(embeddings) if embeddings is not None else None
    next_id = previous.next_id
    for c in np.argsort(-sizes, kind="stable"):
        if stable[c] >= 0:
            continue
        if overlap[c].sum() < 0.5 * sizes[c] and unit is not None:
            centroid = normalise_rows(unit[new == c].mean(0, keepdims=True))[0]
            match = _centroid_match(centroid, previous, taken)
            if match is not None:
                stable[c] = match
                taken.add(match)
                continue
        stable[c] = next_id
        next_id += 1
    for c in range(k):
        if kept[c].any():
            row(c, int(np.argmax(kept[c])), "kept")
        elif stable[c] in taken:
            row(c, old_ids.index(int(stable[c])), "kept")
        for o in np.nonzero(links[c])[0]:
            row(c, o, "split" if links[:, o].sum() + kept[:, o].sum() > 1 else "merged")
        if not kept[c].any() and not links[c].any() and stable[c] not in taken:
            row(c, None, "new")
    linked = kept.any(0) | links.any(0)
    for o, old in enumerate(old_ids):
        if not linked[o] and old not in taken:
            row(None, o, "vanished")
    return Matching(
        stable.astype(np.int32), pl.DataFrame(rows, schema=LINEAGE_SCHEMA, orient="row")
    )


def previous_levels(
    assignments: pl.DataFrame, centroids: pl.DataFrame, largest: pl.DataFrame
) -> dict[str, Previous]:
    """`Previous` per level name from the stored tables (see `storage.previous_clustering`)."""
    ever = dict(largest.iter_rows())
    result = {}
    for (name,), rows in assignments.group_by("level_name", maintain_order=True):
        level_centroids = centroids.filter(pl.col("level_name") == name)
        ids = rows["cluster_id"].to_numpy()
        result[name] = Previous(
            hashes=rows["text_hash"].to_numpy(),
            ids=ids,
            centroids={
                int(c): np.asarray(v, np.float32)
                for c, v in zip(
                    level_centroids["cluster_id"], level_centroids["centroid"], strict=True
                )
            },
            next_id=max(int(ids.max()), ever.get(name) or -1) + 1,
        )
    return result


def first_clustering(k: int) -> Matching:
    """Ids for a level clustered for the first time: 0..k-1, every cluster new."""
    ids = np.arange(k, dtype=np.int32)
    rows = [(int(c), None, "new", 0, None, None) for c in ids]
    return Matching(ids, pl.DataFrame(rows, schema=LINEAGE_SCHEMA, orient="row"))


def stable_levels(levels: list[Level], rows: pl.DataFrame, vectors: np.ndarray, previous) -> tuple:
    """Stable ids per level (previous ids kept where clusters match), centroids and lineage."""
    hashes = rows["text_hash"].to_numpy()
    assignments, centroids, lineage = [], [], []
    for depth, level in enumerate(levels):
        before = previous.get(level.name)
        matching = (
            match_clusters(level.labels, hashes, vectors, before)
            if before is not None
            else first_clustering(level.n_clusters)
        )
        ids = matching.stable_ids[level.labels]
        assignments.append(
            pl.DataFrame(
                {
                    "row_idx": rows["row_idx"],
                    "text_hash": rows["text_hash"],
                    "level": np.full(len(ids), depth, np.int32),
                    "level_name": level.name,
                    "cluster_id": ids,
                    "membership": level.membership,
                    "noise": level.noise,
                    "moved_to_nest": level.moved_to_nest,
                }
            )
        )
        centre, radius = embedding_centroids(level.labels, vectors)
        centroids.append(
            pl.DataFrame(
                {
                    "level": np.full(level.n_clusters, depth, np.int32),
                    "level_name": level.name,
                    "cluster_id": matching.stable_ids,
                    "size": np.bincount(level.labels),
                    "centroid": pl.Series(centre, dtype=pl.Array(pl.Float32, centre.shape[1])).cast(
                        pl.List(pl.Float32)
                    ),
                    "radius": radius,
                }
            )
        )
        lineage.append(
            matching.lineage.with_columns(
                level=pl.lit(depth, pl.Int32), level_name=pl.lit(level.name)
            )
        )
    return pl.concat(assignments), pl.concat(centroids), pl.concat(lineage)
