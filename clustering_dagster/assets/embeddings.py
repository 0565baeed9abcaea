import time

import polars as pl
from dagster import AssetExecutionContext, MaterializeResult
from dagster_duckdb import DuckDBResource

from ..core.dataset_vectors import dataset_vectors, vector_key
from ..core.datasets import DatasetSpec, source_hash
from ..core.embed import cache_key, encoder, pick_device
from ..core.run_config import EmbeddingConfig
from ..core.storage import missing_hashes, model_dim, put_vectors, read_partition
from ..resources import ClusteringSettings, connection
from .common import clustering_asset, stage, write_result

# Vectors are committed every ~CHUNK_SECONDS of encoding, so an interrupted run loses at most
# that much work; the chunk size adapts to the device's speed within these bounds. A commit costs
# ~0.15 s (a connection opened, written and checkpointed): longer chunks keep that under 1%.
CHUNK_SECONDS = 20.0
CHUNK_BOUNDS = (32, 65_536)
# A dataset's own vectors are committed batch by batch (each batch survives a failure) and written
# to the main file once this much is in the write-ahead log, or at the end.
DATASET_VECTORS_CHECKPOINT = "4GB"


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
    # similar lengths in one chunk: the model pads each batch to its longest text
    todo = (
        texts.filter(pl.col("text_hash").is_in(missing.implode()))
        .unique("text_hash", keep="first", maintain_order=True)
        .sort(pl.col("text").str.len_bytes(), maintain_order=True)
    )
    start, size = 0, max(CHUNK_BOUNDS[0], config.batch_size)
    with encoder(config) as encode:
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


def store_dataset_vectors(
    duckdb: DuckDBResource, spec: DatasetSpec, model: str, texts: pl.DataFrame
) -> int:
    """Store the vectors the dataset brings (its `embedding_column`) for those of the texts
    (column text_hash) not stored as `model` yet; returns how many were stored."""
    with connection(duckdb) as conn:
        missing = missing_hashes(conn, model, texts["text_hash"])
    if len(missing) == 0:
        return 0
    wanted = missing.implode()
    with connection(duckdb) as conn:
        # one connection, checkpointed once at the end: a checkpoint per batch doubles the time
        conn.execute(f"SET checkpoint_threshold = '{DATASET_VECTORS_CHECKPOINT}'")
        for hashes, vectors in dataset_vectors(spec):
            keep = hashes.is_in(wanted).to_numpy()
            if keep.any():  # a text repeated in a later batch is not stored twice
                put_vectors(conn, model, hashes.filter(keep), vectors[keep])
    return len(missing)


def vectors_model(
    context: AssetExecutionContext,
    duckdb: DuckDBResource,
    spec: DatasetSpec,
    config: EmbeddingConfig,
    texts: pl.DataFrame,
) -> tuple[str, int]:
    """(the store's model name for the texts' vectors, how many were added): the dataset's own
    vectors if it brings them, else the embedding model's, embedding what is missing."""
    if spec.embedding_column is None:
        return cache_key(config), embed_missing(context, duckdb, config, texts)
    model = vector_key(spec, source_hash(spec))
    return model, store_dataset_vectors(duckdb, spec, model, texts)


@clustering_asset(deps=["raw_texts"])
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
    model, new = vectors_model(context, duckdb, spec, config.embedding, texts)
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
