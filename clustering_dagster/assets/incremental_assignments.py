import polars as pl
from dagster import AssetExecutionContext, MaterializeResult
from dagster_duckdb import DuckDBResource

from ..core.incremental import ClusteredLevel, appended_rows, assign
from ..core.ingest import load_texts
from ..core.storage import matrix_column, partition_vectors, read_partition, vectors_for
from ..resources import ClusteringSettings, connection
from .common import clustering_asset, markdown_table, stage, write_result
from .embeddings import vectors_model

SCHEMA = {
    "text_id": pl.String,
    "text": pl.String,
    "text_hash": pl.String,
    "source_file": pl.String,
    "level": pl.Int32,
    "level_name": pl.String,
    "cluster_id": pl.Int32,
    "confidence": pl.Float32,
    "fits": pl.Boolean,
    "map_x": pl.Float64,
    "map_y": pl.Float64,
}


def _clustered_levels(assignments: pl.DataFrame, centroids: pl.DataFrame) -> list[ClusteredLevel]:
    levels = []
    for (_, name), rows in assignments.group_by("level", "level_name", maintain_order=True):
        known = centroids.filter(pl.col("level_name") == name)
        levels.append(
            ClusteredLevel(
                name=name,
                ids=rows["cluster_id"].to_numpy(),
                centroid_ids=known["cluster_id"].to_numpy(),
                centroids=matrix_column(known, "centroid"),
                radius=known["radius"].to_numpy(),
            )
        )
    return levels


@clustering_asset(deps=["cluster_levels"])
def incremental_assignments(
    context: AssetExecutionContext, duckdb: DuckDBResource, clustering: ClusteringSettings
) -> MaterializeResult:
    """Texts appended to the dataset since its last clustering, assigned to the existing clusters
    of every level without re-clustering; texts that fit no cluster well are flagged."""
    part, config = stage(context, clustering)
    current, _ = load_texts(clustering.dataset(part.dataset))
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
        spec = clustering.dataset(part.dataset)
        model, _ = vectors_model(context, duckdb, spec, config.embedding, new)
        with connection(duckdb) as conn:
            new_vectors = vectors_for(conn, model, new["text_hash"])
        assigned, neighbours = assign(
            new_vectors,
            vectors,
            _clustered_levels(assignments, centroids),
            config.incremental.neighbours,
        )
        placed = (
            new.select("text_id", "text", "text_hash", "source_file")
            .with_columns(
                map_x=coords["map_x"].to_numpy()[neighbours].mean(1),
                map_y=coords["map_y"].to_numpy()[neighbours].mean(1),
            )
            .with_row_index("row")
        )
        frame = (
            assigned.join(placed.cast({"row": pl.Int32}), on="row")
            .select(list(SCHEMA))
            .cast(SCHEMA)
        )
    finest = frame.filter(pl.col("level") == frame["level"].max()) if frame.height else frame
    outlier_share = float((~finest["fits"]).mean()) if finest.height else 0.0
    new_share = new.height / max(rows.height, 1)
    reasons = []
    if new_share > config.incremental.max_new_share:
        reasons.append(f"appended texts are {new_share:.0%} of the clustered ones")
    if outlier_share > config.incremental.max_outlier_share:
        reasons.append(f"{outlier_share:.0%} of them fit no cluster well")
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
