from functools import partial

import polars as pl
from dagster import AssetExecutionContext, MaterializeResult
from dagster_duckdb import DuckDBResource

from ..core.naming.summarize import describe_clusters, offline_descriptions, read_base_clusters
from ..resources import ClusteringSettings, connection
from .common import clustering_asset, markdown_table, stage, write_result
from .summary_runs import cost_metadata, summary_runs

LARGEST_SHOWN = 10


@clustering_asset()
def cluster_summaries(
    context: AssetExecutionContext, duckdb: DuckDBResource, clustering: ClusteringSettings
) -> MaterializeResult:
    """Title, summary, category and coherence of every finest-level cluster, per summary alias:
    from an LLM (labeler kind llm, calls cached) or from the keyword labels (offline)."""
    part, config = stage(context, clustering)
    with connection(duckdb) as conn:
        base = read_base_clusters(conn, part)
    runs = summary_runs(duckdb, context, config)
    frames = []
    for run in runs:
        if run.client is None:
            frame = offline_descriptions(base)
        else:
            settings = config.labeler.summaries[run.alias]
            frame = run.client.run(partial(describe_clusters, run.client, settings, base))
        frames.append(
            frame.with_columns(
                alias=pl.lit(run.alias),
                level_name=pl.lit(base.level_name),
                labeler=pl.lit(run.labeler),
                settings_hash=pl.lit(run.settings_hash),
            )
        )
    table = pl.concat(frames)
    steps = {
        run.alias: {"descriptions": int(frame["fallback"].sum())}
        for run, frame in zip(runs, frames, strict=True)
        if run.client is not None
    }
    metadata = cost_metadata(runs, steps)
    stats = {k: v for k, v in metadata.items() if k != "summary_runs"}
    with connection(duckdb) as conn:
        write_result(
            conn, context, part, config, {}, stats=stats, aliased={"cluster_summaries": table}
        )
    metadata |= {"clusters": base.offline.height, "level": base.level_name}
    for (alias,), rows in table.group_by("alias", maintain_order=True):
        metadata[f"largest_{alias}"] = markdown_table(
            rows.sort("size", descending=True)
            .head(LARGEST_SHOWN)
            .select("cluster_id", "size", "title", "category", "coherence", "fallback")
        )
    return MaterializeResult(metadata=metadata | {"params_hash": config.params_hash()})
