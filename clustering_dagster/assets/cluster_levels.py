from datetime import UTC, datetime

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    MaterializeResult,
)
from dagster_duckdb import DuckDBResource

from ..core.clustering.cluster import fit_levels
from ..core.clustering.evaluate import level_summary
from ..core.clustering.lineage import previous_levels, stable_levels
from ..core.storage.store import (
    Partition,
    matrix_column,
    nesting_violations,
    partition_vectors,
    previous_clustering,
    read_partition,
    unassigned_texts,
)
from ..resources import ClusteringSettings, connection
from .common import clustering_asset, markdown_table, stage, write_result

CHECKS = [
    AssetCheckSpec(
        "every_text_assigned",
        asset="cluster_levels",
        description="Every text has exactly one cluster at every level.",
    ),
    AssetCheckSpec(
        "levels_nested",
        asset="cluster_levels",
        description="Every cluster lies inside exactly one cluster of the level above.",
    ),
    AssetCheckSpec(
        "ground_truth_agreement",
        asset="cluster_levels",
        description="NMI and ARI per level against the dataset's label column, if any.",
    ),
]


def _checks(conn, part: Partition, summary: pl.DataFrame, has_truth: bool, quality) -> list:
    missing = unassigned_texts(conn, part)
    violations = nesting_violations(conn, part)
    results = [
        AssetCheckResult(
            check_name="every_text_assigned",
            passed=missing == 0,
            metadata={"texts_missing_a_level": missing},
        ),
        AssetCheckResult(
            check_name="levels_nested",
            passed=violations == 0,
            metadata={"clusters_with_several_parents": violations},
        ),
    ]
    if not has_truth:
        results.append(
            AssetCheckResult(
                check_name="ground_truth_agreement",
                passed=True,
                description="skipped: the dataset declares no label column",
            )
        )
        return results
    best = summary.sort("nmi", descending=True).row(0, named=True)
    results.append(
        AssetCheckResult(
            check_name="ground_truth_agreement",
            passed=best["nmi"] >= quality.min_nmi and best["ari"] >= quality.min_ari,
            severity=AssetCheckSeverity.WARN,
            metadata={
                "best_level": best["level"],
                "best_nmi": best["nmi"],
                "best_ari": best["ari"],
                "min_nmi": quality.min_nmi,
                "min_ari": quality.min_ari,
                "per_level": markdown_table(summary.select("level", "clusters", "nmi", "ari")),
            },
        )
    )
    return results


@clustering_asset(check_specs=CHECKS)
def cluster_levels(
    context: AssetExecutionContext, duckdb: DuckDBResource, clustering: ClusteringSettings
) -> MaterializeResult:
    """The finest level by HDBSCAN (or KMeans) on the cluster space, every text assigned (noise
    to the nearest centroid, flagged); each level above by merging the clusters of the level below
    (or fitted and nested). Clusters that match the previous clustering keep their ids; the
    lineage records what changed."""
    part, config = stage(context, clustering)
    with connection(duckdb) as conn:
        coords = read_partition(
            conn, "projections", part, "row_idx, cluster_space, fitted", "row_idx"
        )
        rows, vectors = partition_vectors(conn, part)
        truth_column = read_partition(conn, "texts", part, "ground_truth", "row_idx")[
            "ground_truth"
        ]
        previous = previous_levels(*previous_clustering(conn, part))
    levels = fit_levels(
        matrix_column(coords, "cluster_space"),
        vectors,
        config.levels,
        config.projection.random_state,
        coords["fitted"].to_numpy(),
        config.upper_levels,
    )
    has_truth = truth_column.is_not_null().any()
    truth = truth_column.to_numpy() if has_truth else None
    summary = level_summary(levels, truth)
    assignments, centroids, lineage = stable_levels(levels, rows, vectors, previous)
    lineage = lineage.with_columns(
        dagster_run_id=pl.lit(context.run.run_id),
        recorded_at=pl.lit(datetime.now(UTC).replace(tzinfo=None)),
    )
    events = lineage.group_by("level_name", "event").len().sort("level_name", "event")
    with connection(duckdb) as conn:
        write_result(
            conn,
            context,
            part,
            config,
            {"assignments": assignments, "cluster_centroids": centroids},
            stats={"levels": summary.to_dicts(), "lineage": events.to_dicts()},
            history={"cluster_lineage": lineage},
        )
        checks = _checks(conn, part, summary, has_truth, config.quality)
    metadata = {
        "texts": coords.height,
        "levels": markdown_table(summary),
        "lineage": markdown_table(
            events.pivot("event", index="level_name", values="len").fill_null(0)
        ),
        "params_hash": config.params_hash(),
    }
    for level in levels:
        metadata[f"clusters_{level.name}"] = level.n_clusters
        metadata[f"noise_share_{level.name}"] = round(level.noise_share, 3)
    return MaterializeResult(metadata=metadata, check_results=checks)
