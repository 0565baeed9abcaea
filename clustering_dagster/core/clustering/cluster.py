"""Cluster levels: HDBSCAN (or KMeans) on the cluster space, noise reassigned, and levels above
built by merging the clusters below them (or fitted too, then nested), coarse to fine. On large
data a level is fitted on the texts the projection fitted, and the others are voted in."""

from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import pairwise

import numpy as np

from ..batches import CENTROID_ROWS as BATCH_ROWS
from ..config.run_config import LevelConfig, UpperLevelsConfig
from ..embedding.embed import normalise_rows, unit_batches
from .agglomerate import merge_clusters
from .sums import cluster_sums, unit_sums
from .upper_levels import upper_levels
from .vote import Voters, find_voters, vote


@dataclass(frozen=True)
class Level:
    name: str
    labels: np.ndarray  # (n,) int32 cluster id per text, 0 = largest cluster
    membership: np.ndarray  # (n,) float32 in [0, 1]: HDBSCAN probability, else centroid margin
    noise: np.ndarray  # (n,) bool: HDBSCAN left it out; it went to the nearest centroid
    moved_to_nest: np.ndarray  # (n,) bool: moved to the cluster that holds its finer cluster
    method: str = "hdbscan"  # a merged level keeps the membership and noise of the level below

    @property
    def n_clusters(self) -> int:
        return int(self.labels.max()) + 1

    @property
    def noise_share(self) -> float:
        return float(self.noise.mean())


# A size given as a share of the texts is never below this many texts.
MIN_SHARE_BASED_SIZE = 5
# A level is fitted on the texts the projection fitted, at most this many of them; every other
# text takes the cluster its VOTE_NEIGHBOURS nearest fitted texts vote for.
MAX_FIT_POINTS = 100_000
VOTE_NEIGHBOURS = 10
# min_samples shrinks with a sample, but not below this (1 would make HDBSCAN single linkage).
MIN_SCALED_MIN_SAMPLES = 5
# Nor does the minimum cluster size: a sample of m texts standing for n resolves no topic of
# fewer than about MIN_FITTED_SIZE * n / m texts (raise projection.fit_sample to see smaller).
MIN_FITTED_SIZE = 5


def min_cluster_size(level: LevelConfig, n: int) -> int:
    """The level's minimum cluster size in texts, among `n` texts (before any cap)."""
    if level.min_cluster_size < 1:
        size = max(MIN_SHARE_BASED_SIZE, round(level.min_cluster_size * n))
    else:
        size = round(level.min_cluster_size)
    return int(max(2, min(size, n)))


def fitted_cluster_size(level: LevelConfig, n: int, represents: int) -> int:
    """The minimum cluster size among `n` fitted texts standing for `represents`: the level's
    size scaled to the sample (never below MIN_FITTED_SIZE), then capped by
    `min_cluster_size_cap` fitted texts, so a sample resolves topics down to cap x represents / n
    texts and no finer (raise projection.fit_sample for finer)."""
    scale = n / represents
    size = round(min_cluster_size(level, represents) * scale)
    size = size if scale == 1 else max(size, MIN_FITTED_SIZE)
    if level.min_cluster_size < 1 and level.min_cluster_size_cap is not None:
        size = min(size, max(MIN_SHARE_BASED_SIZE, round(level.min_cluster_size_cap)))
    return max(2, size)


def _centroids(space: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    return cluster_sums(space, labels, k) / np.bincount(labels, minlength=k)[:, None]


def _nearest_with_margin(space: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid per point, and 1 - d1/d2 (0: halfway between two, 1: on its centroid),
    BATCH_ROWS points at a time."""
    nearest = np.empty(len(space), np.int64)
    margin = np.ones(len(space), np.float32)
    for start in range(0, len(space), BATCH_ROWS):
        rows = space[start : start + BATCH_ROWS]
        dist = np.sqrt(
            np.maximum(
                (rows**2).sum(1)[:, None] - 2 * rows @ centroids.T + (centroids**2).sum(1), 0
            )
        )
        order = np.argsort(dist, axis=1)[:, :2]
        nearest[start : start + len(rows)] = order[:, 0]
        if centroids.shape[0] > 1:
            d1 = dist[np.arange(len(rows)), order[:, 0]]
            d2 = dist[np.arange(len(rows)), order[:, 1]]
            margin[start : start + len(rows)] = 1 - d1 / np.where(d2 == 0, 1, d2)
    return nearest, margin


def _relabel_by_size(labels: np.ndarray) -> np.ndarray:
    counts = np.bincount(labels)
    order = np.argsort(-counts, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[labels].astype(np.int32)


def _hdbscan(
    space: np.ndarray, level: LevelConfig, represents: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HDBSCAN on `space`, which may be a sample standing for `represents` texts: its minimum
    cluster size and min_samples shrink with the sample, so clusters keep the density they have
    among all the texts. Noise goes to the nearest centroid."""
    import hdbscan

    n = len(space)
    scale = n / represents
    size = fitted_cluster_size(level, n, represents)
    if n <= size:  # no room for two clusters: everything is one
        return np.zeros(n, np.int32), np.ones(n, np.float32), np.zeros(n, bool)
    min_samples = None
    if level.min_samples:
        floor = min(level.min_samples, MIN_SCALED_MIN_SAMPLES)
        min_samples = max(floor, round(level.min_samples * scale))
    model = hdbscan.HDBSCAN(
        min_cluster_size=size,
        min_samples=min(min_samples, size) if min_samples else None,
        cluster_selection_method=level.cluster_selection_method,
        core_dist_n_jobs=1,
    ).fit(space)
    labels, probabilities = model.labels_.astype(np.int32), model.probabilities_
    noise = labels < 0
    if noise.all():
        return np.zeros(n, np.int32), np.zeros(n, np.float32), noise
    nearest, margin = _nearest_with_margin(
        space, _centroids(space[~noise], labels[~noise], labels.max() + 1)
    )
    membership = np.where(noise, margin, probabilities).astype(np.float32)
    return np.where(noise, nearest, labels).astype(np.int32), membership, noise


def _kmeans(space: np.ndarray, level: LevelConfig, seed: int | None) -> tuple[np.ndarray, ...]:
    from sklearn.cluster import KMeans

    k = min(level.k, len(np.unique(space, axis=0)))
    model = KMeans(n_clusters=k, n_init=3, random_state=seed if seed is not None else 0).fit(space)
    _, margin = _nearest_with_margin(space, model.cluster_centers_)
    return model.labels_.astype(np.int32), margin, np.zeros(len(space), bool)


def _fit_level(space, level: LevelConfig, seed, represents: int) -> tuple[np.ndarray, ...]:
    if level.method == "kmeans":
        return _kmeans(space, level, seed)
    return _hdbscan(space, level, represents)


@dataclass(frozen=True)
class Fit:
    """The rows levels are fitted on (those the projection fitted, at most MAX_FIT_POINTS), the
    other rows, and their voters among the fitted ones (found once, for every fitted level)."""

    rows: np.ndarray
    rest: np.ndarray
    voters: Voters | None


def _fit(fitted: np.ndarray | None, vectors: np.ndarray, levels: Sequence[LevelConfig]) -> Fit:
    n = len(vectors)
    rows = np.arange(n) if fitted is None else np.flatnonzero(fitted)
    if len(rows) > MAX_FIT_POINTS:
        rows = np.sort(np.random.default_rng(0).choice(rows, MAX_FIT_POINTS, replace=False))
    rest = np.setdiff1d(np.arange(n), rows, assume_unique=True)
    if len(rest) == 0 or all(level.method == "merge" for level in levels):
        return Fit(rows, rest, None)
    return Fit(rows, rest, find_voters(vectors, rest, rows, VOTE_NEIGHBOURS))


def _fit_everywhere(space, fit: Fit, level: LevelConfig, seed) -> tuple:
    """A fitted level's (labels, membership, noise) for every text: fitted on `fit.rows`; every
    other text votes with its nearest fitted texts."""
    fitted = _fit_level(space[fit.rows], level, seed, len(space))
    if fit.voters is None:
        return fitted
    voted = vote(fit.voters, *fitted)
    whole = (
        np.empty(len(space), np.int32),
        np.empty(len(space), np.float32),
        np.empty(len(space), bool),
    )
    for out, mine, theirs in zip(
        whole, fitted, (voted.labels, voted.membership, voted.noise), strict=True
    ):
        out[fit.rows], out[fit.rest] = mine, theirs
    return whole


def parents(child: np.ndarray, parent: np.ndarray) -> dict[int, int]:
    """For each child cluster id, the parent cluster id holding most of its texts."""
    width = int(parent.max()) + 1
    codes, counts = np.unique(child.astype(np.int64) * width + parent, return_counts=True)
    pairs = np.stack([codes // width, codes % width])
    order = np.lexsort((-counts, pairs[0]))  # by child, the largest overlap first
    chosen: dict[int, int] = {}
    for c, p in pairs[:, order].T.tolist():
        chosen.setdefault(c, p)
    return chosen


def merge_target(level: LevelConfig, n_below: int) -> int:
    """How many nodes a merge level aims at, given the clusters of the level below."""
    if level.n_clusters is not None:
        return level.n_clusters
    return max(1, round(n_below / level.branching))


def _merged(level: LevelConfig, finer: Level, vectors: np.ndarray) -> Level:
    """A level whose nodes are unions of the finer level's clusters: no text moves; a text keeps
    its noise flag and membership from the finer level."""
    group = merge_clusters(
        vectors, finer.labels, merge_target(level, finer.n_clusters), level.linkage, level.min_gap
    )
    return Level(
        level.name,
        group[finer.labels].astype(np.int32),
        finer.membership,
        finer.noise,
        np.zeros(len(finer.labels), bool),
        "merge",
    )


def _nested(level: LevelConfig, fitted: tuple, finer: Level | None) -> Level:
    """A fitted level; below a finer one, each finer cluster joins the cluster holding most of
    its texts, and texts moved that way are flagged `moved_to_nest`."""
    labels, membership, noise = fitted
    moved = np.zeros(len(labels), bool)
    if finer is not None:
        lookup = parents(finer.labels, labels)
        nested = np.array([lookup[c] for c in range(finer.n_clusters)], np.int32)[finer.labels]
        moved = nested != labels
        labels = nested
        membership = np.where(moved, 0.0, membership).astype(np.float32)
    return Level(level.name, labels, membership, noise, moved, level.method)


def fit_levels(
    space: np.ndarray,
    vectors: np.ndarray,
    levels: Sequence[LevelConfig],
    seed: int | None,
    fitted: np.ndarray | None = None,
    upper: UpperLevelsConfig | None = None,
) -> list[Level]:
    """All levels, coarse first, each a union of the clusters of the level below.

    Levels are built from the finest up: `hdbscan` and `kmeans` levels are fitted on the cluster
    space and then nested; `merge` levels join the clusters of the level below by their
    embeddings (`vectors`); with `upper`, as many merge levels as the coarsest listed level's
    clusters need are added above it. When the projection fitted only some texts (`fitted`), the
    fitted levels are fitted on those and the other texts voted in. Cluster ids are ordered by
    size (0 = largest).
    """
    if levels[-1].method == "merge":
        raise ValueError(f"the finest level, {levels[-1].name!r}, cannot be method merge")
    result: list[Level] = []
    finer: Level | None = None
    fit = _fit(fitted, vectors, levels)
    for level in reversed(levels):
        if level.method == "merge":
            built = _merged(level, finer, vectors)
        else:
            built = _nested(level, _fit_everywhere(space, fit, level, seed), finer)
        finer = _ordered(built)
        result.append(finer)
    if upper is not None:
        for level in reversed(upper_levels(finer.n_clusters, upper)):
            finer = _ordered(_merged(level, finer, vectors))
            result.append(finer)
    return result[::-1]


def _ordered(level: Level) -> Level:
    """The level with its cluster ids 0..k-1, by size (0 = largest)."""
    labels = np.unique(level.labels, return_inverse=True)[1].astype(np.int32)
    return replace(level, labels=_relabel_by_size(labels))


# Members' cosine distance to their centroid below which this share of them lies: a cluster's radius.
RADIUS_QUANTILE = 0.9


def embedding_centroids(
    labels: np.ndarray, embeddings: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Unit centroid per cluster id 0..k-1 in embedding space, and each cluster's radius (the
    `RADIUS_QUANTILE` quantile of its members' cosine distance to the centroid)."""
    k = int(labels.max()) + 1
    centroids = normalise_rows(unit_sums(embeddings, labels, k)).astype(np.float32)
    distance = np.empty(len(labels), np.float32)
    for start, unit in unit_batches(embeddings):
        mine = labels[start : start + len(unit)]
        distance[start : start + len(unit)] = 1 - np.einsum("ij,ij->i", unit, centroids[mine])
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(k + 1))
    radius = [np.quantile(distance[order[a:b]], RADIUS_QUANTILE) for a, b in pairwise(bounds)]
    return centroids, np.asarray(radius, np.float32)
