from functools import partial

import polars as pl
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue
from dagster_duckdb import DuckDBResource

from ..core.labelling.hierarchy import render_tree
from ..core.labelling.label import KeywordLabeler
from ..core.naming.merge import FALLBACK_STEPS, KeywordNames, Merger, stored_encoder
from ..core.naming.merged_tree import merged_tree, offline_tree
from ..core.naming.offline_levels import OfflineLevels
from ..core.naming.prompts import Node
from ..core.naming.summarize import read_base_clusters
from ..core.privacy.threshold import with_folded_nodes
from ..core.storage.store import HIDDEN_ID, read_partition
from ..resources import ClusteringSettings, connection
from .common import clustering_asset, stage, write_result
from .summary_runs import cost_metadata, summary_runs


@clustering_asset()
def merged_hierarchy(
    context: AssetExecutionContext, duckdb: DuckDBResource, clustering: ClusteringSettings
) -> MaterializeResult:
    """The named tree per summary alias: LLM-named parent levels merged over the base clusters
    (Clio's method), or offline the HDBSCAN levels with their keyword labels."""
    part, config = stage(context, clustering)
    runs = summary_runs(duckdb, context, config)
    with connection(duckdb) as conn:
        base = read_base_clusters(conn, part)
        summaries = read_partition(
            conn, "cluster_summaries", part, "*", "alias, cluster_id"
        ).filter(pl.col("alias").is_in([run.alias for run in runs]))
        hdbscan_tree = read_partition(conn, "hierarchy", part, "*", "position").filter(
            pl.col("cluster_id") != HIDDEN_ID
        )
        hidden = read_partition(conn, "hidden_clusters", part, "*", "level", required=False)
        total = read_partition(conn, "texts", part, "count(*) AS n", "n")["n"][0]
        examples = read_partition(
            conn, "cluster_labels", part, "level, cluster_id, examples", "level"
        )
    names = KeywordNames(base, KeywordLabeler(config.labeler.n_keywords, config.labeler.n_examples))
    embed = stored_encoder(duckdb.get_connection, config.embedding)
    trees, steps = [], {}
    for run in runs:
        mine = summaries.filter(pl.col("alias") == run.alias)
        if mine["cluster_id"].to_list() != base.cluster_ids:
            raise LookupError(
                f"the summaries of alias {run.alias!r} do not match the clusters of {part}: "
                "materialise cluster_summaries first"
            )
        if run.client is None:
            tree = offline_tree(hdbscan_tree, examples)
        else:
            settings = config.labeler.summaries[run.alias]
            offline = OfflineLevels(hdbscan_tree, base.cluster_ids, base.offline["size"].to_numpy())
            merger = Merger(run.client, settings, base, embed, names, offline)
            nodes = [Node(*row) for row in mine.select("title", "summary", "fallback").rows()]
            levels = run.client.run(partial(merger.levels, nodes))
            tree = merged_tree(base, mine, levels, names.labels)
            steps[run.alias] = {
                step: sum(level.fallbacks[step] for level in levels) for step in FALLBACK_STEPS
            }
        trees.append(with_folded_nodes(tree, hidden, total).with_columns(alias=pl.lit(run.alias)))
    table = pl.concat(trees)
    metadata = cost_metadata(runs, steps)
    stats = {k: v for k, v in metadata.items() if k != "summary_runs"}
    with connection(duckdb) as conn:
        write_result(
            conn, context, part, config, {}, stats=stats, aliased={"merged_hierarchy": table}
        )
    for run, tree in zip(runs, trees, strict=True):
        outline = render_tree(tree.rename({"title": "label"}))
        metadata |= {
            f"levels_{run.alias}": int(tree["level"].max()) + 1,
            f"roots_{run.alias}": int(tree["parent_id"].is_null().sum()),
            f"assigned_by_embedding_{run.alias}": int((tree["assigned_by"] == "embedding").sum()),
            f"stand_in_parents_{run.alias}": int((tree["method"] == "offline").sum()),
            f"outline_{run.alias}": MetadataValue.md(f"```\n{outline}\n```"),
        }
    return MaterializeResult(metadata=metadata | {"params_hash": config.params_hash()})
