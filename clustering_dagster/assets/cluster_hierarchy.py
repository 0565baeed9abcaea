import base64

import polars as pl
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue
from dagster_duckdb import DuckDBResource

from ..core.labelling.hierarchy import build_tree, render_tree
from ..core.privacy.threshold import visible_levels, with_folded_nodes
from ..core.results.plot import map_png
from ..core.storage.store import read_partition
from ..resources import ClusteringSettings, connection
from .common import clustering_asset, stage, write_result


@clustering_asset()
def cluster_hierarchy(
    context: AssetExecutionContext, duckdb: DuckDBResource, clustering: ClusteringSettings
) -> MaterializeResult:
    """The tree of named clusters, coarse to fine: one row per cluster with its parent; its
    metadata holds the outline and the 2-D map coloured and named by the top level."""
    part, config = stage(context, clustering)
    with connection(duckdb) as conn:
        assignments = read_partition(
            conn, "assignments", part, "level, level_name, cluster_id", "level, row_idx"
        )
        named = read_partition(
            conn, "cluster_labels", part, "level, cluster_id, label, keywords", "level, cluster_id"
        )
        coords = read_partition(conn, "projections", part, "map_x, map_y", "row_idx")
        hidden = read_partition(conn, "hidden_clusters", part, "*", "level", required=False)
    levels, keep = visible_levels(assignments)
    coords = coords.filter(keep)
    by_level = named.partition_by("level", maintain_order=True)
    tree = build_tree(
        [level["level_name"][0] for level in levels],
        [level["cluster_id"].to_numpy() for level in levels],
        [dict(zip(level["cluster_id"], level["label"], strict=True)) for level in by_level],
        [dict(zip(level["cluster_id"], level["keywords"], strict=True)) for level in by_level],
    )
    tree = with_folded_nodes(tree, hidden, total=keep.len()).with_columns(
        position=pl.int_range(pl.len(), dtype=pl.Int32)
    )
    with connection(duckdb) as conn:
        write_result(conn, context, part, config, {"hierarchy": tree})
    outline = render_tree(tree)
    top = levels[0]
    png = map_png(
        coords.to_numpy(),
        top["cluster_id"].to_numpy(),
        dict(zip(by_level[0]["cluster_id"], by_level[0]["label"], strict=True)),
        f"{part.dataset} | {part.run_config}: {top['level_name'][0]} level",
    )
    return MaterializeResult(
        metadata={
            "nodes": tree.height,
            "roots": int(tree["parent_id"].is_null().sum()),
            "outline": MetadataValue.md(f"```\n{outline}\n```"),
            "map": MetadataValue.md(
                f"![map](data:image/png;base64,{base64.b64encode(png).decode()})"
            ),
            "params_hash": config.params_hash(),
        }
    )
