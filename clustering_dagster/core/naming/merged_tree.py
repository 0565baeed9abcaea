"""The merged hierarchy as table rows: the LLM tree over the base clusters, or the offline one."""

from collections.abc import Callable, Sequence

import numpy as np
import polars as pl

from ..labelling.hierarchy import NODE_SCHEMA, build_tree
from ..labelling.label import ClusterLabel
from .merge import MergedLevel
from .summarize import BaseClusters, offline_summary

TREE_SCHEMA = {
    **NODE_SCHEMA,
    "title": pl.String,
    "summary": pl.String,
    "keywords": pl.List(pl.String),
    "path": pl.String,
    "position": pl.Int32,
    "method": pl.String,
    "assigned_by": pl.String,
    "fallback": pl.Boolean,
}


def merged_tree(
    base: BaseClusters,
    summaries: pl.DataFrame,
    levels: Sequence[MergedLevel],
    keyword_labels: Callable[[np.ndarray], list[ClusterLabel]],
) -> pl.DataFrame:
    """The merged tree, top level first, in depth-first order, from the base clusters'
    `summaries` and the parent `levels` above them; base nodes keep the ids (and level name) of
    the finest offline level. `keyword_labels` gives the keywords of a base-to-node map."""
    text_base = np.searchsorted(base.cluster_ids, base.ids)
    maps = [np.arange(len(base.cluster_ids))]  # base cluster -> node, per level upwards
    for level in levels:
        maps.append(level.parent[maps[-1]])
    names = [base.level_name] + [f"parent_{d}" for d in range(1, len(levels) + 1)]
    per_text = [base.ids] + [m[text_base] for m in maps[1:]]
    titles = [dict(zip(summaries["cluster_id"], summaries["title"], strict=True))]
    info = {
        (base.level_name, c): (s, f, "llm")
        for c, s, f in summaries.select("cluster_id", "summary", "fallback").iter_rows()
    }
    keywords = [dict(zip(summaries["cluster_id"], summaries["keywords"], strict=True))]
    for depth, level in enumerate(levels, start=1):
        titles.append({i: n.title for i, n in enumerate(level.nodes)})
        keywords.append({i: list(c.keywords) for i, c in enumerate(keyword_labels(maps[depth]))})
        info |= {
            (names[depth], i): (n.summary, n.fallback, n.method) for i, n in enumerate(level.nodes)
        }
    assigned = {}  # how each node got its parent, by (level name, cluster id)
    for depth, level in enumerate(levels):
        ids = base.cluster_ids if depth == 0 else range(len(level.assigned_by))
        assigned |= {(names[depth], c): how for c, how in zip(ids, level.assigned_by, strict=True)}
    tree = build_tree(names[::-1], per_text[::-1], titles[::-1], keywords[::-1])
    keys = list(zip(tree["level_name"], tree["cluster_id"], strict=True))
    return (
        tree.rename({"label": "title"})
        .with_columns(
            summary=pl.Series([info[k][0] for k in keys], dtype=pl.String),
            position=pl.int_range(pl.len(), dtype=pl.Int32),
            method=pl.Series([info[k][2] for k in keys], dtype=pl.String),
            assigned_by=pl.Series([assigned.get(k) for k in keys], dtype=pl.String),
            fallback=pl.Series([info[k][1] for k in keys], dtype=pl.Boolean),
        )
        .select(list(TREE_SCHEMA))
    )


def offline_tree(hierarchy: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
    """The HDBSCAN tree (`hierarchy` rows) as a merged tree: keyword labels for titles, offline
    summaries from `labels` (level, cluster_id, examples)."""
    joined = hierarchy.join(labels, on=["level", "cluster_id"], how="left", maintain_order="left")
    return (
        joined.select(
            *[c for c in TREE_SCHEMA if c in hierarchy.columns],
            title=pl.col("label"),
            summary=pl.struct("size", "keywords", "examples").map_elements(
                lambda r: offline_summary(r["size"], r["keywords"] or [], r["examples"] or []),
                pl.String,
            ),
            method=pl.lit("hdbscan"),
            assigned_by=pl.when(pl.col("parent_id").is_not_null()).then(pl.lit("hdbscan")),
            fallback=pl.lit(False),
        )
        .select(list(TREE_SCHEMA))
        .cast(TREE_SCHEMA)
    )
