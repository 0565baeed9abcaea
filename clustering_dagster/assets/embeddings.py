import time

import polars as pl
from dagster import AssetExecutionContext, MaterializeResult
from dagster_duckdb import DuckDBResource

from ..core.embed import cache_key, make_encoder, pick_device
from ..core.run_config import EmbeddingConfig
from ..core.storage import missing_hashes, model_dim, put_vectors, read_partition
from ..resources import ClusteringSettings, connection
from .common import clustering_asset, stage, write_result

# Vectors are committed every ~CHUNK_SECONDS of encoding, so an interrupted run loses at most
# that much work; the chunk size adapts to the device's speed within these bounds.
CHUNK_SECONDS = 3.0
CHUNK_BOUNDS = (32, 16_384)


def embed_missing(
    context: AssetExecutionContext,
    duckdb: DuckDBResource,
    config: EmbeddingConfig,
    texts: pl.DataFrame,
) -> int:
    """Embed the texts (columns text, text_hash) that the vector store lacks for this model, in
    chunks committed as they finish; returns how many were embedded."""
    model = cache_key(config)
    with connection(duckdb) as conn:
        missing = missing_hashes(conn, model, texts["text_hash"])
    if len(missing) == 0:
        return 0
    encode = make_encoder(config)
    todo = texts.filter(pl.col("text_hash").is_in(missing.implode())).unique(
        "text_hash", keep="first", maintain_order=True
    )
    start, size = 0, max(CHUNK_BOUNDS[0], config.batch_size)
    while start < todo.height:
        chunk = todo.slice(start, size)
        began = time.perf_counter()
        vectors = encode(chunk["text"].to_list())
        seconds = time.perf_counter() - began
        with connection(duckdb) as conn:
            put_vectors(conn, model, chunk["text_hash"], vectors)
        start += chunk.height
        context.log.info(f"embedded {start}/{todo.height} new texts")
        rate = chunk.height / max(seconds, 1e-3)
        size = int(min(max(rate * CHUNK_SECONDS, CHUNK_BOUNDS[0]), CHUNK_BOUNDS[1]))
    return todo.height


@clustering_asset(deps=["raw_texts"])
def embeddings(
    context: AssetExecutionContext, duckdb: DuckDBResource, clustering: ClusteringSettings
) -> MaterializeResult:
    """One vector per text, from a cache keyed by (model, text hash): only new texts are embedded."""
    part, config = stage(context, clustering)
    model = cache_key(config.embedding)
    with connection(duckdb) as conn:
        texts = read_partition(conn, "texts", part, "row_idx, text, text_hash", "row_idx")
    started = time.perf_counter()
    new = embed_missing(context, duckdb, config.embedding, texts)
    seconds = time.perf_counter() - started
    with connection(duckdb) as conn:
        dim = model_dim(conn, model)
        refs = texts.select("row_idx", "text_hash", model=pl.lit(model), dim=pl.lit(dim, pl.Int32))
        stats = {"new": new, "cached": texts["text_hash"].n_unique() - new}
        write_result(conn, context, part, config, {"embeddings": refs}, stats=stats)
    device = (
        pick_device(config.embedding.device) if config.embedding.backend != "litellm" else "api"
    )
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
