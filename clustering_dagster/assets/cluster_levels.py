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

from ..core.clustering.changes import (
    alerts,
    change_report,
    event_counts,
    new_texts,
    ordered,
    readable,
)
from ..core.clustering.cluster import fit_levels
from ..core.clustering.evaluate import level_summary
from ..core.clustering.lineage import previous_levels, stable_levels
from ..core.config.run_config import ChangesConfig
from ..core.privacy.threshold import fold_levels
from ..core.storage.store import (
    Partition,
    matrix_column,
    nesting_violations,
    partition_vectors,
    previous_clustering,
    previous_sizes,
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
    AssetCheckSpec(
        "emerging_clusters",
        asset="cluster_levels",
        description="No cluster emerged since the previous clustering: new, or its share grown "
        "past the run configuration's `changes` thresholds (warns; wire it to an alert).",
    ),
]

# Rows of the change report shown in the materialisation's metadata.
SHOWN_CHANGES = 20


def _emerging_check(report: pl.DataFrame, settings: ChangesConfig) -> AssetCheckResult:
    """Warns when a cluster of at least `alert_share` of the texts emerged, naming them."""
    found = readable(alerts(report, settings))
    first = report.height == 0 or report["previous_run_id"].is_null().all()
    metadata = {
        "alerts": found.height,
        "emerging_clusters": int(report["emerging"].sum()),
        "alert_share": settings.alert_share,
        "previous_run_id": None if first else report["previous_run_id"][0],
    }
    description = "first clustering: nothing to compare with" if first else None
    if found.height:
        metadata["clusters"] = markdown_table(found.drop("emerging"))
        description = f"{found.height} emerging: " + ", ".join(
            f"{row['cluster']} ({row['event']}, {row['share']} of the texts)"
            for row in found.iter_rows(named=True)
        )
    return AssetCheckResult(
        check_name="emerging_clusters",
        passed=found.height == 0,
        severity=AssetCheckSeverity.WARN,
        description=description,
        metadata=metadata,
    )


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
    lineage records what changed, and the change report (`cluster_changes`) what it means: sizes
    and shares before and now, emerging clusters first."""
    part, config = stage(context, clustering)
    with connection(duckdb) as conn:
        coords = read_partition(
            conn, "projections", part, "row_idx, cluster_space, fitted", "row_idx"
        )
        rows, vectors = partition_vectors(conn, part)
        truth_column = read_partition(conn, "texts", part, "ground_truth", "row_idx")[
            "ground_truth"
        ]
        before = previous_clustering(conn, part)
        previous_run, previous_clusters = previous_sizes(conn, part)
        users = read_partition(conn, "private_rows", part, "user_id", "row_idx", required=False)
    previous = previous_levels(*before)
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
    folded = fold_levels(levels, rows, vectors, users["user_id"], config.privacy)
    # what a person may see: the levels without the clusters below the privacy threshold
    summary = level_summary(folded.levels, None if truth is None else truth[folded.keep])
    assignments, centroids, lineage = stable_levels(
        folded.levels, folded.rows, folded.vectors, previous
    )
    assignments, centroids = folded.add_to(assignments, centroids)
    stamp = {
        "dagster_run_id": pl.lit(context.run.run_id),
        "recorded_at": pl.lit(datetime.now(UTC).replace(tzinfo=None)),
    }
    lineage = lineage.with_columns(**stamp)
    report = change_report(
        lineage,
        centroids,
        new_texts(assignments, before[0]),
        previous_clusters,
        config.changes,
        private=config.privacy.threshold,
    ).with_columns(previous_run_id=pl.lit(previous_run, pl.String), **stamp)
    counts = event_counts(report)
    events = lineage.group_by("level_name", "event").len().sort("level_name", "event")
    with connection(duckdb) as conn:
        write_result(
            conn,
            context,
            part,
            config,
            {
                "assignments": assignments,
                "cluster_centroids": centroids,
                "hidden_clusters": folded.hidden,
            },
            stats={
                "levels": summary.to_dicts(),
                "lineage": events.to_dicts(),
                "hidden": folded.hidden.to_dicts(),
                "changes": counts.to_dicts(),
            },
            history={"cluster_lineage": lineage, "cluster_changes": report},
        )
        checks = _checks(conn, part, summary, has_truth, config.quality)
    checks.append(_emerging_check(report, config.changes))
    metadata = {
        "texts": coords.height,
        "levels": markdown_table(summary),
        "lineage": markdown_table(
            events.pivot("event", index="level_name", values="len").fill_null(0)
        ),
        "changes": markdown_table(readable(ordered(report), limit=SHOWN_CHANGES)),
        "changes_per_level": markdown_table(counts),
        "emerging_clusters": int(report["emerging"].sum()),
        "previous_run_id": previous_run,
        "params_hash": config.params_hash(),
    }
    for level in folded.levels:
        metadata[f"clusters_{level.name}"] = level.n_clusters
        metadata[f"noise_share_{level.name}"] = round(level.noise_share, 3)
    if config.privacy.threshold:
        metadata["texts_below_privacy_threshold"] = int(folded.hidden["texts"].max())
        for level, hidden in folded.hidden.select("level_name", "clusters").iter_rows():
            metadata[f"hidden_clusters_{level}"] = hidden
    return MaterializeResult(metadata=metadata, check_results=checks)
