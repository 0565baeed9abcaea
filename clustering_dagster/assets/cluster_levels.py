import base64

import numpy as np
import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    asset,
)
from dagster_duckdb import DuckDBResource

from ..core.cluster import Level, fit_levels
from ..core.evaluate import agreement
from ..core.plot import map_png
from ..core.storage import (
    SCHEMA,
    Partition,
    matrix_column,
    nesting_violations,
    read_partition,
    unassigned_texts,
)
from ..resources import ClusteringSettings, connection
from .common import ASSET_ARGS, markdown_table, stage, write_result

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


def _assignments_frame(row_idx: pl.Series, levels: list[Level]) -> pl.DataFrame:
    return pl.concat(
        [
            pl.DataFrame(
                {
                    "row_idx": row_idx,
                    "level": np.full(len(row_idx), depth, np.int32),
                    "level_name": level.name,
                    "cluster_id": level.labels,
                    "membership": level.membership,
                    "noise": level.noise,
                    "moved_to_nest": level.moved_to_nest,
                }
            )
            for depth, level in enumerate(levels)
        ]
    )


def _level_summary(levels: list[Level], truth: np.ndarray | None) -> pl.DataFrame:
    rows = []
    for level in levels:
        row = {
            "level": level.name,
            "clusters": level.n_clusters,
            "hdbscan_noise_share": round(level.noise_share, 3),
            "moved_to_nest": int(level.moved_to_nest.sum()),
            "largest": int(np.bincount(level.labels).max()),
            "smallest": int(np.bincount(level.labels).min()),
        }
        if truth is not None:
            row |= {
                k: round(v, 3)
                for k, v in agreement(truth, level.labels).items()
                if k in ("nmi", "ari")
            }
        rows.append(row)
    return pl.DataFrame(rows)


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


@asset(deps=["projections"], check_specs=CHECKS, **ASSET_ARGS)
def cluster_levels(
    context: AssetExecutionContext, duckdb: DuckDBResource, clustering: ClusteringSettings
) -> MaterializeResult:
    """HDBSCAN (or KMeans) per configured level on the cluster space; every text gets a cluster at
    every level (noise reassigned to the nearest centroid and flagged) and levels nest."""
    part, config = stage(context, clustering)
    with connection(duckdb) as conn:
        coords = read_partition(
            conn, "projections", part, "row_idx, cluster_space, map_x, map_y", "row_idx"
        )
        truth_column = conn.execute(
            f"SELECT ground_truth FROM {SCHEMA}.texts WHERE dataset = ? AND run_config = ? "
            "ORDER BY row_idx",
            [part.dataset, part.run_config],
        ).pl()["ground_truth"]
    levels = fit_levels(
        matrix_column(coords, "cluster_space"), config.levels, config.projection.random_state
    )
    has_truth = truth_column.is_not_null().any()
    truth = truth_column.to_numpy() if has_truth else None
    summary = _level_summary(levels, truth)
    with connection(duckdb) as conn:
        write_result(
            conn,
            context,
            part,
            config,
            {"assignments": _assignments_frame(coords["row_idx"], levels)},
            stats={"levels": summary.to_dicts()},
        )
        checks = _checks(conn, part, summary, has_truth, config.quality)
    png = map_png(
        coords.select("map_x", "map_y").to_numpy(),
        levels[0].labels,
        f"{part.dataset} | {part.run_config}: {levels[0].name} level",
    )
    metadata = {
        "texts": coords.height,
        "levels": markdown_table(summary),
        "map": MetadataValue.md(f"![map](data:image/png;base64,{base64.b64encode(png).decode()})"),
        "params_hash": config.params_hash(),
    }
    for level in levels:
        metadata[f"clusters_{level.name}"] = level.n_clusters
        metadata[f"noise_share_{level.name}"] = round(level.noise_share, 3)
    return MaterializeResult(metadata=metadata, check_results=checks)
