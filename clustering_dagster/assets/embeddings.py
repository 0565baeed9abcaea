import time
from functools import partial

import polars as pl
from dagster import AssetExecutionContext, MaterializeResult
from dagster_duckdb import DuckDBResource

from ..core.embedding.embed import pick_device
from ..core.embedding.store_vectors import vectors_model
from ..core.storage.store import model_dim, read_partition
from ..resources import ClusteringSettings, connection
from .common import clustering_asset, stage, write_result


@clustering_asset()
def embeddings(
    context: AssetExecutionContext, duckdb: DuckDBResource, clustering: ClusteringSettings
) -> MaterializeResult:
    """One vector per text, from a cache keyed by (model, text hash): only new texts are embedded;
    a dataset with an `embedding_column` brings its own vectors, which are stored instead."""
    part, config = stage(context, clustering)
    spec = clustering.dataset(part.dataset)
    with connection(duckdb) as conn:
        texts = read_partition(conn, "texts", part, "row_idx, text, text_hash", "row_idx")
    started = time.perf_counter()
    model, new = vectors_model(
        partial(connection, duckdb), context.log.info, spec, config.embedding, texts
    )
    seconds = time.perf_counter() - started
    with connection(duckdb) as conn:
        dim = model_dim(conn, model)
        refs = texts.select("row_idx", "text_hash", model=pl.lit(model), dim=pl.lit(dim, pl.Int32))
        stats = {"new": new, "cached": texts["text_hash"].n_unique() - new}
        write_result(conn, context, part, config, {"embeddings": refs}, stats=stats)
    if spec.embedding_column is not None:
        device = f"none: the dataset's column {spec.embedding_column!r}"
    elif config.embedding.backend == "litellm":
        device = "api"
    else:
        device = pick_device(config.embedding.device)
    return MaterializeResult(
        metadata={
            "texts": texts.height,
            "newly_embedded": new,
            "from_cache": stats["cached"],
            "model": model,
            "dimensions": dim,
            "device": device,
            "embedding_seconds": round(seconds, 2),
            "texts_per_second": round(new / seconds, 1) if new else 0.0,
            "params_hash": config.params_hash(),
        }
    )
