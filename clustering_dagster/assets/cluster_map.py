from pathlib import Path

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue
from dagster_duckdb import DuckDBResource

from ..core.results.map_page import default_path, map_data, render
from ..core.results.outputs import write_atomically
from ..resources import ClusteringSettings, connection
from .common import clustering_asset, stage, write_result


@clustering_asset()
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
    write_atomically(path, page, create_parent=True)
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(path)),
            "texts": data.points.height,
            "top_clusters": int((data.tree.nodes["level"] == 0).sum()),
            "names": data.tree.names,
            "size_mb": round(len(page.encode()) / 1e6, 2),
            "params_hash": config.params_hash(),
        }
    )
