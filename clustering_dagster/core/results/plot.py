"""A PNG of the 2-D map, coloured by the top level, with a legend naming each top node."""

import io
from collections.abc import Mapping

import numpy as np

# Distinct colours for up to 40 top nodes (the 10 strong ones of tab10 first); more reuse them.
PALETTES = ("tab10", "Set2", "Dark2", "tab20b")
# At most this many points are drawn (an even sample): the picture is the same, the PNG smaller.
MAX_POINTS = 30_000


def _colours(n: int) -> list:
    from matplotlib import colormaps

    palette = [c for name in PALETTES for c in colormaps[name].colors[:10]]
    return [palette[i % len(palette)] for i in range(n)]


def map_png(map_2d: np.ndarray, labels: np.ndarray, names: Mapping[int, str], title: str) -> bytes:
    """The map, one colour per top node (`labels`: its id per text), numbered on the map at each
    node's median position and named in the legend with its share of the texts, largest first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ids, sizes = np.unique(labels, return_counts=True)
    order = ids[np.argsort(-sizes, kind="stable")]
    colour = dict(zip(order.tolist(), _colours(len(order)), strict=True))
    shown = np.arange(len(labels))
    if len(shown) > MAX_POINTS:
        shown = np.linspace(0, len(labels) - 1, MAX_POINTS).astype(int)
    fig, ax = plt.subplots(figsize=(12, 7.5), dpi=100)
    ax.scatter(
        map_2d[shown, 0],
        map_2d[shown, 1],
        c=[colour[c] for c in labels[shown].tolist()],
        s=6 if len(shown) < 5000 else 2,
        linewidths=0,
    )
    handles = []
    for number, node in enumerate(order.tolist(), start=1):
        members = map_2d[labels == node]
        x, y = np.median(members, axis=0)
        ax.annotate(
            str(number),
            (x, y),
            ha="center",
            va="center",
            fontsize=12,
            fontweight="bold",
            bbox={"boxstyle": "circle,pad=0.2", "fc": "white", "ec": colour[node], "alpha": 0.85},
        )
        share = len(members) / len(labels)
        name = names.get(node, str(node))
        handles.append(
            plt.Line2D(
                [],
                [],
                marker="o",
                linestyle="",
                markersize=9,
                color=colour[node],
                label=f"{number}. {name[:48]} ({share:.0%})",
            )
        )
    ax.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
        fontsize=11,
        frameon=False,
        ncol=1 if len(handles) <= 25 else 2,
    )
    ax.set_title(title, fontsize=13)
    ax.set_xticks([])
    ax.set_yticks([])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()
