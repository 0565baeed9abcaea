from functools import partial

import polars as pl
from dagster import AssetExecutionContext, MaterializeResult
from dagster_duckdb import DuckDBResource

from ..core.clustering.incremental import (
    SCHEMA,
    appended_rows,
    assignments_table,
    clustered_levels,
    recluster_reasons,
)
from ..core.data_in.prepare import prepare
from ..core.embedding.store_vectors import vectors_model
from ..core.storage.store import partition_vectors, read_partition, vectors_for
from ..resources import ClusteringSettings, connection
from .common import clustering_asset, markdown_table, stage, write_result
from .summary_runs import facet_describer


@clustering_asset()
def incremental_assignments(
    context: AssetExecutionContext, duckdb: DuckDBResource, clustering: ClusteringSettings
) -> MaterializeResult:
    """Texts appended to the dataset since its last clustering, assigned to the existing clusters
    of every level without re-clustering; texts that fit no cluster well are flagged."""
    part, config = stage(context, clustering)
    spec = clustering.dataset(part.dataset)
    current = prepare(spec, config, facet_describer(duckdb, context, config, spec)[1]).texts
    with connection(duckdb) as conn:
        rows, vectors = partition_vectors(conn, part)
        assignments = read_partition(
            conn, "assignments", part, "level, level_name, cluster_id", "level, row_idx"
        )
        centroids = read_partition(
            conn,
            "cluster_centroids",
            part,
            "level, level_name, cluster_id, centroid, radius",
            "level, cluster_id",
        )
        coords = read_partition(conn, "projections", part, "map_x, map_y", "row_idx")
    new = appended_rows(current, rows)
    removed = rows.height - (current.height - new.height)
    frame = pl.DataFrame(schema=SCHEMA)
    if new.height:
        model, _ = vectors_model(
            partial(connection, duckdb), context.log.info, spec, config.embedding, new
        )
        with connection(duckdb) as conn:
            new_vectors = vectors_for(conn, model, new["text_hash"])
        frame = assignments_table(
            new,
            new_vectors,
            vectors,
            clustered_levels(assignments, centroids),
            config.incremental.neighbours,
            coords,
        )
    finest = frame.filter(pl.col("level") == frame["level"].max()) if frame.height else frame
    outlier_share = float((~finest["fits"]).mean()) if finest.height else 0.0
    new_share = new.height / max(rows.height, 1)
    reasons = recluster_reasons(new_share, outlier_share, config.incremental)
    with connection(duckdb) as conn:
        write_result(
            conn,
            context,
            part,
            config,
            {"incremental_assignments": frame},
            stats={"appended": new.height, "removed": removed, "outlier_share": outlier_share},
        )
    per_level = (
        frame.group_by("level", "level_name")
        .agg(
            assigned=pl.len(),
            fit_no_cluster=(~pl.col("fits")).sum(),
            mean_confidence=pl.col("confidence").mean().round(3),
        )
        .sort("level")
        .drop("level")
    )
    return MaterializeResult(
        metadata={
            "appended_texts": new.height,
            "removed_since_clustering": max(removed, 0),
            "appended_share": round(new_share, 4),
            "outlier_share": round(outlier_share, 4),
            "recluster_recommended": bool(reasons),
            "why_recluster": "; ".join(reasons) or "no: the clusters still fit",
            "per_level": markdown_table(per_level) if frame.height else "no appended texts",
            "params_hash": config.params_hash(),
        }
    )
