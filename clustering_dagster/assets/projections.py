import time

from dagster import AssetExecutionContext, MaterializeResult
from dagster_duckdb import DuckDBResource

from ..core.config.run_config import stable_hash
from ..core.data_in.ingest import content_hash
from ..core.projection.neighbourhood import resolved_projection
from ..core.projection.project import distinct_rows, project_rows
from ..core.storage.store import find_projection, partition_model, partition_vectors, read_partition
from ..resources import ClusteringSettings, connection
from .common import clustering_asset, stage, write_result

PROJECTION_COLUMNS = "row_idx, cluster_space, map_x, map_y, input_hash, fitted"
# Raised when the projection's method changes, so stored projections are not reused (2: sampled
# texts enter UMAP as their representatives, and `fitted` says which texts UMAP fitted).
PROJECTION_METHOD = 2


@clustering_asset()
def projections(
    context: AssetExecutionContext, duckdb: DuckDBResource, clustering: ClusteringSettings
) -> MaterializeResult:
    """UMAP cluster space and 2-D map; reused when texts, model and projection settings match."""
    part, config = stage(context, clustering)
    with connection(duckdb) as conn:
        rows, vectors = partition_vectors(conn, part)
        distinct_texts = rows["text_hash"].n_unique()
        projection = resolved_projection(config, distinct_texts)
        input_hash = stable_hash(
            {
                "texts": content_hash(rows),
                "model": partition_model(conn, part)[0],
                "normalize": config.embedding.normalize,
                "projection": projection.model_dump(mode="json"),
                "method": PROJECTION_METHOD,
            }
        )
        source = find_projection(conn, input_hash)
    started = time.perf_counter()
    if source is not None:
        with connection(duckdb) as conn:
            frame = read_partition(conn, "projections", source, PROJECTION_COLUMNS, "row_idx")
            write_result(conn, context, part, config, {"projections": frame}, input_hash)
        method = f"reused from {source.dataset}|{source.run_config}"
    else:
        first, inverse = distinct_rows(rows)
        distinct = vectors[first]
        del vectors  # a million texts' vectors are 1.5 GB: keep one copy while projecting
        frame, method = project_rows(
            rows, distinct, inverse, config.embedding.normalize, projection, input_hash
        )
        with connection(duckdb) as conn:
            write_result(conn, context, part, config, {"projections": frame}, input_hash)
    return MaterializeResult(
        metadata={
            "texts": rows.height,
            "distinct_texts": distinct_texts,
            "method": method,
            "cluster_space_dimensions": projection.n_components,
            "n_neighbors": projection.n_neighbors,
            "projection_seconds": round(time.perf_counter() - started, 2),
            "input_hash": input_hash,
            "params_hash": config.params_hash(),
        }
    )
