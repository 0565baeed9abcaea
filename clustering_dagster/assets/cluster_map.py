from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
)
from dagster_duckdb import DuckDBResource

from ..core.privacy.exposure import exposures
from ..core.results.map_page import default_path, map_data, render
from ..core.results.outputs import write_atomically
from ..resources import ClusteringSettings, connection
from .common import clustering_asset, stage, write_result

PRIVACY_CHECK = AssetCheckSpec(
    "privacy_threshold",
    asset="cluster_map",
    description="No view shows a cluster below the run configuration's privacy threshold, or a "
    "text of one.",
)


@clustering_asset(check_specs=[PRIVACY_CHECK])
def cluster_map(
    context: AssetExecutionContext, duckdb: DuckDBResource, clustering: ClusteringSettings
) -> MaterializeResult:
    """The interactive map of the partition: one self-contained HTML page (no network needed to
    view it) in `maps/` beside the DuckDB file, named by the LLM alias when there is one."""
    part, config = stage(context, clustering)
    with connection(duckdb) as conn:
        data = map_data(conn, part)
    page = render(data)
    path = default_path(Path(duckdb.database), part)
    stats = {"path": str(path), "texts": data.points.height, "names": data.tree.names}
    with connection(duckdb) as conn:
        write_result(conn, context, part, config, {}, stats=stats)
        exposed = exposures(conn, part, config.privacy)  # as published (or as before)
    write_atomically(path, page, create_parent=True)
    check = AssetCheckResult(
        check_name="privacy_threshold",
        passed=not any(exposed.values()),
        metadata=exposed
        | {
            "min_conversations": config.privacy.min_conversations,
            "min_users": config.privacy.min_users or 0,
        },
    )
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(path)),
            "texts": data.points.height,
            "top_clusters": int((data.tree.nodes["level"] == 0).sum()),
            "names": data.tree.names,
            "size_mb": round(len(page.encode()) / 1e6, 2),
            "params_hash": config.params_hash(),
        },
        check_results=[check],
    )
