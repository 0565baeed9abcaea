"""Upper levels built by merging the clusters of the level below, so that levels nest by
construction and no text moves.

Each cluster is a point: the direction of its members' mean embedding, taken after subtracting
the mean of all texts (what every text shares says nothing about which clusters belong together),
weighted by its number of texts. Clusters are joined bottom-up by Ward's criterion (the join that
adds least within-group variance, which keeps groups of comparable size), or by average linkage
of the cosine distances. The tree is cut so that, once every group of a single cluster has joined
its nearest group, about the target number of groups remain; or, with a `min_gap`, where a join
costs far more than the one before it, within a factor two of the target: clearly separate groups
stay apart, even a group of a single cluster.
"""

from dataclasses import dataclass

import numpy as np

from ..embedding.embed import normalise_rows
from .sums import unit_sums

# A cut snaps to a gap in the join costs only within this factor of the target number of nodes.
GAP_RANGE = 2.0
# A cut is looked for among at most this many times the target number of groups.
SEARCH_RANGE = 2


@dataclass(frozen=True)
class Tree:
    """Joins of k clusters, cheapest first: step t joins nodes `joins[t]` (a cluster is a node
    0..k-1, the node made by step t is k + t) at cost `costs[t]`, non-decreasing."""

    joins: np.ndarray  # (k - 1, 2) int
    costs: np.ndarray  # (k - 1,) float

    @property
    def n_leaves(self) -> int:
        return len(self.costs) + 1


def cluster_directions(vectors: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Unit direction of each cluster's mean embedding (ids 0..k-1) after centring all texts."""
    k = int(labels.max()) + 1
    sums = unit_sums(vectors, labels, k)
    mean = sums.sum(0) / len(labels)
    return normalise_rows(sums - np.bincount(labels, minlength=k)[:, None] * mean)


def _squared_distances(points: np.ndarray) -> np.ndarray:
    norms = (points**2).sum(1)
    return np.maximum(norms[:, None] + norms[None, :] - 2 * points @ points.T, 0)


def join_tree(points: np.ndarray, weights: np.ndarray, linkage: str = "ward") -> Tree:
    """Agglomerate weighted points (Lance-Williams updates, O(k^2) memory, O(k^3) time).

    `ward`: the cost of joining groups a and b is n_a n_b / (n_a + n_b) |m_a - m_b|^2 with n the
    summed weights and m the weighted means. `average`: the weighted mean cosine distance between
    their points.
    """
    k = len(points)
    weights = weights.astype(np.float64)
    if linkage == "ward":
        d = weights[:, None] * weights[None, :] / (weights[:, None] + weights[None, :])
        d = d * _squared_distances(points.astype(np.float64))
    else:
        d = 1 - points.astype(np.float64) @ points.T.astype(np.float64)
    np.fill_diagonal(d, np.inf)
    node = np.arange(k)  # the tree node each live row stands for
    joins, costs = np.zeros((max(k - 1, 0), 2), np.int64), np.zeros(max(k - 1, 0))
    for step in range(k - 1):
        a, b = np.unravel_index(np.argmin(d), d.shape)
        a, b = min(a, b), max(a, b)
        joins[step], costs[step] = (node[a], node[b]), d[a, b]
        na, nb = weights[a], weights[b]
        if linkage == "ward":
            merged = ((na + weights) * d[a] + (nb + weights) * d[b] - weights * d[a, b]) / (
                na + nb + weights
            )
        else:
            merged = (na * d[a] + nb * d[b]) / (na + nb)
        d[a], d[:, a] = merged, merged
        d[b], d[:, b] = np.inf, np.inf
        d[a, a] = np.inf
        weights[a] = na + nb
        node[a] = k + step
    return Tree(joins, np.maximum.accumulate(costs))


def cut(tree: Tree, n_groups: int) -> np.ndarray:
    """The group (0..n_groups-1) of every leaf when the tree is cut into n_groups."""
    k = tree.n_leaves
    parent = np.arange(2 * k - 1)
    for step in range(k - n_groups):
        parent[tree.joins[step]] = k + step

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    return np.unique([root(i) for i in range(k)], return_inverse=True)[1]


def natural_groups(tree: Tree, target: int, min_gap: float) -> int | None:
    """A number of groups within GAP_RANGE of the target where the next join costs at least
    `min_gap` times the previous one (the widest such gap), or None."""
    k = tree.n_leaves
    best, best_gap = None, min_gap
    low, high = max(2, int(np.ceil(target / GAP_RANGE))), min(k - 1, int(target * GAP_RANGE))
    for groups in range(low, high + 1):
        # having `groups` groups, the next join is step k - groups; the last one made, step - 1
        before, after = tree.costs[k - groups - 1], tree.costs[k - groups]
        gap = after / before if before > 0 else np.inf
        if gap >= best_gap:
            best, best_gap = groups, gap
    return best


def absorb_single_children(
    groups: np.ndarray, points: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Every group of one cluster joins the group whose centre is nearest (cosine), the closest
    first, until no group has a single cluster or only one group is left; groups renumbered."""
    groups = groups.copy()
    while True:
        ids, groups = np.unique(groups, return_inverse=True)
        counts = np.bincount(groups)
        if len(ids) < 2 or counts.min() > 1:
            return groups
        sums = np.zeros((len(ids), points.shape[1]))
        np.add.at(sums, groups, points * weights[:, None])
        centres = normalise_rows(sums)
        similarity = centres @ centres.T
        np.fill_diagonal(similarity, -np.inf)
        single = np.flatnonzero(counts == 1)
        row = single[np.argmax(similarity[single].max(1))]
        groups[groups == row] = np.argmax(similarity[row])


def cut_near(tree: Tree, points: np.ndarray, weights: np.ndarray, target: int) -> np.ndarray:
    """Of the cuts into target / SEARCH_RANGE to target * SEARCH_RANGE groups, once each group
    of a single cluster has joined its nearest group, the one leaving the number of groups
    closest to the target (on a tie, the coarser cut: fewer groups were absorbed)."""
    best, best_miss = None, None
    low, high = max(2, target // SEARCH_RANGE), min(tree.n_leaves, SEARCH_RANGE * target)
    for count in range(low, high + 1):
        groups = absorb_single_children(cut(tree, count), points, weights)
        miss = abs(int(groups.max()) + 1 - target)
        if best_miss is None or miss < best_miss:
            best, best_miss = groups, miss
    return best


def merge_clusters(
    vectors: np.ndarray,
    labels: np.ndarray,
    target: int,
    linkage: str = "ward",
    min_gap: float | None = None,
) -> np.ndarray:
    """The group (0..m-1) of every cluster id 0..k-1 of `labels`: about `target` groups, at most
    k / 2, none of a single cluster; or, with `min_gap`, the groups a clear gap near the target
    shows. Fewer than four clusters stay as they are (each its own group)."""
    k = int(labels.max()) + 1
    if k < 4:
        return np.arange(k)
    target = max(2, min(target, k // 2))
    points = cluster_directions(vectors, labels)
    weights = np.bincount(labels, minlength=k).astype(np.float64)
    tree = join_tree(points, weights, linkage)
    snapped = natural_groups(tree, target, min_gap) if min_gap else None
    if snapped is not None:
        return cut(tree, snapped)
    return cut_near(tree, points, weights, target)
