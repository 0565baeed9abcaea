"""Per-cluster sums of rows: the one computation behind centroids, cluster directions and
radii."""

import numpy as np

from ..embedding.embed import unit_batches


def cluster_sums(space: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per cluster id 0..k-1, the sum of its rows (float64), by one sparse product."""
    from scipy import sparse

    members = sparse.csr_matrix(
        (np.ones(len(labels)), (labels, np.arange(len(labels)))), shape=(k, len(labels))
    )
    return np.asarray(members @ space, dtype=np.float64)


def unit_sums(vectors: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per cluster id 0..k-1, the sum of its rows scaled to unit length, a batch at a time."""
    sums = np.zeros((k, vectors.shape[1]), np.float64)
    for start, unit in unit_batches(vectors):
        sums += cluster_sums(unit, labels[start : start + len(unit)], k)
    return sums
