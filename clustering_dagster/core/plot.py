"""A PNG of the 2-D map, coloured by cluster."""

import io

import numpy as np


def map_png(map_2d: np.ndarray, labels: np.ndarray, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 6), dpi=80)
    ax.scatter(map_2d[:, 0], map_2d[:, 1], c=labels, cmap="tab20", s=2, linewidths=0)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()
