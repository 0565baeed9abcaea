"""Exports of a partition's clusters: the JSON of simonw's `llm cluster`, or one row per text.

JSON: a list of clusters of one level, each `{"id": "<node id>", "items": [{"id": <text id>,
"content": <text>}, ...], "summary": <the cluster's name>}`, largest first. CSV and Parquet: one
row per text with its id, text, and the node id and name at every level of the tree.
"""

import polars as pl

from ..errors import InputError
from .reading import NamedTree

FORMATS = ("json", "csv", "parquet")


def _truncated(column: str, truncate: int) -> pl.Expr:
    """The text cut to `truncate` characters (0: whole), marked with '...' where cut."""
    if truncate <= 0:
        return pl.col(column)
    return (
        pl.when(pl.col(column).str.len_chars() > truncate)
        .then(pl.col(column).str.slice(0, truncate) + "...")
        .otherwise(pl.col(column))
    )


def _depth_of(tree: NamedTree, level: str | None) -> int:
    names = tree.level_names()
    if level is None:
        return len(names) - 1
    if level not in names:
        raise InputError(f"no level {level!r} in {tree.part} (levels: {', '.join(names)})")
    return names.index(level)


def llm_cluster_json(tree: NamedTree, texts: pl.DataFrame, level: str | None, truncate: int):
    """The clusters of `level` (default: the finest) in `llm cluster`'s shape; `texts` as
    returned by `results.text_names`."""
    depth = _depth_of(tree, level)
    items = (
        texts.select(
            node=pl.col(f"node_{depth}"),
            item=pl.struct(id=pl.col("text_id"), content=_truncated("text", truncate)),
        )
        .group_by("node", maintain_order=True)
        .agg("item")
    )
    nodes = tree.nodes.filter(pl.col("level") == depth).select("node_id", "name", "position")
    clusters = nodes.join(items, left_on="node_id", right_on="node", how="left").sort("position")
    return [
        {"id": node_id, "items": item or [], "summary": name}
        for node_id, name, _, item in clusters.iter_rows()
    ]


def text_table(tree: NamedTree, texts: pl.DataFrame, level: str | None, truncate: int):
    """One row per text: row_idx, text_id, text, then `<level>_id` and `<level>_name` for every
    level (or only `level`)."""
    names = tree.level_names()
    depths = range(len(names)) if level is None else [_depth_of(tree, level)]
    return texts.select(
        "row_idx",
        "text_id",
        _truncated("text", truncate).alias("text"),
        *[
            expr
            for d in depths
            for expr in (
                pl.col(f"node_{d}").alias(f"{names[d]}_id"),
                pl.col(f"name_{d}").alias(f"{names[d]}_name"),
            )
        ],
    )
