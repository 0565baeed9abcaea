"""A partition's vectors into the store: the texts the store lacks for the model, embedded in
chunks committed as they finish (an interrupted run keeps what it embedded), or the vectors a
dataset brings in its own column."""

import time
from collections.abc import Callable

import polars as pl

from ..config.run_config import EmbeddingConfig
from ..data_in.dataset_vectors import dataset_vectors, vector_key
from ..data_in.datasets import DatasetSpec, source_hash
from ..storage.store import Connect, missing_hashes, put_vectors
from .embed import cache_key, encoder

# Vectors are committed every ~CHUNK_SECONDS of encoding, so an interrupted run loses at most
# that much work; the chunk size adapts to the device's speed within these bounds. A commit costs
# ~0.15 s (a connection opened, written and checkpointed): longer chunks keep that under 1%.
CHUNK_SECONDS = 20.0
CHUNK_BOUNDS = (32, 65_536)
# A dataset's own vectors are committed batch by batch (each batch survives a failure) and written
# to the main file once this much is in the write-ahead log, or at the end.
DATASET_VECTORS_CHECKPOINT = "4GB"


def embed_missing(connect: Connect, log: Callable[[str], None], config: EmbeddingConfig,
                  texts: pl.DataFrame) -> int:  # fmt: skip
    """Embed the texts (columns text, text_hash) that the vector store lacks for this model, in
    chunks committed as they finish; returns how many were embedded."""
    model = cache_key(config)
    with connect() as conn:
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
            with connect() as conn:
                put_vectors(conn, model, chunk["text_hash"], vectors)
            start += chunk.height
            log(f"embedded {start}/{todo.height} new texts")
            rate = chunk.height / max(seconds, 1e-3)
            size = int(min(max(rate * CHUNK_SECONDS, CHUNK_BOUNDS[0]), CHUNK_BOUNDS[1]))
    return todo.height


def store_dataset_vectors(
    connect: Connect, spec: DatasetSpec, model: str, texts: pl.DataFrame
) -> int:
    """Store the vectors the dataset brings (its `embedding_column`) for those of the texts
    (column text_hash) not stored as `model` yet; returns how many were stored."""
    with connect() as conn:
        missing = missing_hashes(conn, model, texts["text_hash"])
    if len(missing) == 0:
        return 0
    wanted = missing.implode()
    with connect() as conn:
        # one connection, checkpointed once at the end: a checkpoint per batch doubles the time
        conn.execute(f"SET checkpoint_threshold = '{DATASET_VECTORS_CHECKPOINT}'")
        for hashes, vectors in dataset_vectors(spec):
            keep = hashes.is_in(wanted).to_numpy()
            if keep.any():  # a text repeated in a later batch is not stored twice
                put_vectors(conn, model, hashes.filter(keep), vectors[keep])
    return len(missing)


def vectors_model(
    connect: Connect,
    log: Callable[[str], None],
    spec: DatasetSpec,
    config: EmbeddingConfig,
    texts: pl.DataFrame,
) -> tuple[str, int]:
    """(the store's model name for the texts' vectors, how many were added): the dataset's own
    vectors if it brings them, else the embedding model's, embedding what is missing."""
    if spec.embedding_column is None:
        return cache_key(config), embed_missing(connect, log, config, texts)
    model = vector_key(spec, source_hash(spec))
    return model, store_dataset_vectors(connect, spec, model, texts)
