"""Agreement of cluster assignments with a ground-truth label column (evaluation only)."""

import numpy as np
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
