"""Clusters for texts outside the fitted sample: each takes the cluster its nearest fitted texts
vote for, compared by their embeddings (cosine), weighted by inverse distance."""

from dataclasses import dataclass

import numpy as np

from ..batches import PROJECTION_ROWS as BATCH_ROWS
from ..embedding.embed import normalise_rows
from ..projection.anchors import Anchors


@dataclass(frozen=True)
class Voters:
    """For each text outside the fit, its k nearest fitted texts (indices into the fit) and
    their weights (summing to 1 per text)."""

    nearest: np.ndarray  # (n, k) int64
    weights: np.ndarray  # (n, k) float32


@dataclass(frozen=True)
class Votes:
    labels: np.ndarray  # (n,) int32: the cluster with the most weight
    membership: np.ndarray  # (n,) float32: its share of the weight, times its voters' membership
    noise: np.ndarray  # (n,) bool: most of the weight came from texts HDBSCAN left out


def find_voters(vectors: np.ndarray, rows: np.ndarray, fit: np.ndarray, k: int) -> Voters:
    """The k nearest of `vectors[fit]` to each of `vectors[rows]`, read batch by batch (the rows
    are never copied all at once)."""
    index = Anchors(normalise_rows(vectors[fit]))
    k = min(k, len(fit))
    nearest = np.empty((len(rows), k), np.int64)
    weights = np.empty((len(rows), k), np.float32)
    for start in range(0, len(rows), BATCH_ROWS):
        batch = normalise_rows(vectors[rows[start : start + BATCH_ROWS]])
        weights[start : start + len(batch)], nearest[start : start + len(batch)] = index.nearest(
            batch, k
        )
    return Voters(nearest, weights)


def vote(voters: Voters, labels: np.ndarray, membership: np.ndarray, noise: np.ndarray) -> Votes:
    """The voters' verdict given the fitted texts' clusters, memberships and noise flags."""
    n = len(voters.nearest)
    out = Votes(np.empty(n, np.int32), np.empty(n, np.float32), np.empty(n, bool))
    for start in range(0, n, BATCH_ROWS):
        nearest = voters.nearest[start : start + BATCH_ROWS]
        weights = voters.weights[start : start + BATCH_ROWS]
        clusters = labels[nearest]
        # per voter, the weight of every voter in the same cluster (k x k per text)
        agreeing = (weights[:, None, :] * (clusters[:, :, None] == clusters[:, None, :])).sum(2)
        best = agreeing.argmax(1)
        chosen = np.arange(len(best))
        done = slice(start, start + len(best))
        out.labels[done] = clusters[chosen, best]
        winning = clusters == clusters[chosen, best][:, None]
        out.membership[done] = (weights * membership[nearest] * winning).sum(1)
        out.noise[done] = (weights * noise[nearest]).sum(1) > 0.5
    return out
