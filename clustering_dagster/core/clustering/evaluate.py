"""Agreement of cluster assignments with a ground-truth label column (evaluation only)."""

import numpy as np
import polars as pl
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


def agreement(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """NMI and ARI over the texts that have a ground-truth label."""
    known = np.array([t is not None for t in truth])
    if not known.any():
        return {"nmi": float("nan"), "ari": float("nan"), "labelled": 0}
    return {
        "nmi": float(normalized_mutual_info_score(truth[known], predicted[known])),
        "ari": float(adjusted_rand_score(truth[known], predicted[known])),
        "labelled": int(known.sum()),
    }


def level_summary(levels: list, truth: np.ndarray | None) -> pl.DataFrame:
    """Per level (`cluster.Level`s): clusters, noise, sizes and, with `truth`, NMI and ARI."""
    rows = []
    for level in levels:
        sizes = np.bincount(level.labels)
        row = {
            "level": level.name,
            "method": level.method,
            "clusters": level.n_clusters,
            "hdbscan_noise_share": round(level.noise_share, 3),
            "moved_to_nest": int(level.moved_to_nest.sum()),
            "largest": int(sizes.max()),
            "largest_share": round(float(sizes.max() / sizes.sum()), 3),
            "smallest": int(sizes.min()),
        }
        if truth is not None:
            row |= {
                k: round(v, 3)
                for k, v in agreement(truth, level.labels).items()
                if k in ("nmi", "ari")
            }
        rows.append(row)
    return pl.DataFrame(rows)
