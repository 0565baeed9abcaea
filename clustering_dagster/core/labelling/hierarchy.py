"""The cluster tree: one row per cluster at every level, with its parent one level up."""

from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from ..clustering.cluster import parents

# The columns every tree shares: a node, its parent, where it sits and how big it is.
NODE_SCHEMA = {
    "node_id": pl.String,
    "parent_id": pl.String,
    "level": pl.Int32,
    "level_name": pl.String,
    "cluster_id": pl.Int32,
    "size": pl.Int64,
    "share": pl.Float64,
    "n_children": pl.Int32,
}

HIERARCHY_SCHEMA = {
    **NODE_SCHEMA,
    "label": pl.String,
    "keywords": pl.List(pl.String),
    "path": pl.String,
}


def node_id(level_name: str, cluster_id: int) -> str:
    return f"{level_name}/{cluster_id}"


def build_tree(
    level_names: Sequence[str],
    assignments: Sequence[np.ndarray],
    labels: Sequence[Mapping[int, str]],
    keywords: Sequence[Mapping[int, Sequence[str]]],
) -> pl.DataFrame:
    """Rows ordered depth-first, largest first, so reading them top-down reads the tree.

    `assignments[i]` is the nested cluster id per text at level i (coarse first); `labels[i][c]`
    and `keywords[i][c]` name cluster c of level i.
    """
    n = len(assignments[0])
    sizes = [dict(zip(*np.unique(ids, return_counts=True), strict=True)) for ids in assignments]
    parent_of = [{}] + [
        parents(assignments[i], assignments[i - 1]) for i in range(1, len(assignments))
    ]
    children: dict[tuple[int, int], list[int]] = {}
    for depth in range(1, len(assignments)):
        for child, parent in parent_of[depth].items():
            children.setdefault((depth - 1, parent), []).append(child)
    rows = []

    def visit(depth: int, cluster: int, parent_path: str | None) -> None:
        name = labels[depth][cluster]
        path = name if parent_path is None else f"{parent_path} > {name}"
        kids = sorted(children.get((depth, cluster), []), key=lambda c: -sizes[depth + 1][c])
        parent = parent_of[depth].get(cluster)
        rows.append(
            {
                "node_id": node_id(level_names[depth], cluster),
                "parent_id": None if parent is None else node_id(level_names[depth - 1], parent),
                "level": depth,
                "level_name": level_names[depth],
                "cluster_id": cluster,
                "size": int(sizes[depth][cluster]),
                "share": sizes[depth][cluster] / n,
                "n_children": len(kids),
                "label": name,
                "keywords": list(keywords[depth][cluster]),
                "path": path,
            }
        )
        for kid in kids:
            visit(depth + 1, kid, path)

    for root in sorted(sizes[0], key=lambda c: -sizes[0][c]):
        visit(0, int(root), None)
    return pl.DataFrame(rows, schema=HIERARCHY_SCHEMA)


def render_tree(tree: pl.DataFrame, max_children: int = 5) -> str:
    """An indented text outline of the tree: every top node, and under each node its largest
    `max_children` children; where children are cut, a line says how many more there are and
    how many texts they hold, so the sizes under a node always add up."""
    children: dict[str | None, list[dict]] = {}
    for row in tree.iter_rows(named=True):
        children.setdefault(row["parent_id"], []).append(row)
    lines: list[str] = []

    def visit(parent: str | None, limit: int | None) -> None:
        rows = children.get(parent, [])
        for row in rows[:limit]:
            lines.append(f"{'  ' * row['level']}- {row['label']} ({row['size']})")
            visit(row["node_id"], max_children)
        rest = rows[len(rows[:limit]) :]
        if rest:
            indent = "  " * rest[0]["level"]
            lines.append(f"{indent}- +{len(rest)} more ({sum(r['size'] for r in rest)})")

    visit(None, None)
    return "\n".join(lines)
