"""Vectors a dataset brings with it: a Parquet list (or fixed-size list) column of floats, read in
batches and validated, one vector per distinct text."""

from collections.abc import Iterator

import numpy as np
import polars as pl

from ..batches import PARQUET_ROWS as BATCH_ROWS
from ..errors import InputError
from .datasets import DatasetSpec
from .ingest import clean_texts, text_hash


def vector_key(spec: DatasetSpec, source_hash: str) -> str:
    """The store's model name for a dataset's own vectors: new file content, new vectors."""
    return f"dataset:{spec.key}/{spec.embedding_column}@{source_hash[:16]}"


def _matrix(column, path, name: str, first_row: int, dim: int | None) -> np.ndarray:
    """A batch of a list column as an (n, d) float32 matrix; any null, ragged, non-numeric or
    non-finite value is an InputError naming the file, column and row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    where = f"{path}: column {name!r}"
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)) and not (
        pa.types.is_fixed_size_list(column.type)
    ):
        raise InputError(f"{where} holds {column.type}, not a list of floats per row")
    if not (
        pa.types.is_floating(column.type.value_type) or pa.types.is_integer(column.type.value_type)
    ):
        raise InputError(f"{where} holds lists of {column.type.value_type}, not of floats")
    if column.null_count:
        row = first_row + int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise InputError(f"{where}, row {row + 1}: no vector")
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    dim = dim or int(lengths[0])
    ragged = np.flatnonzero(lengths != dim)
    if len(ragged) or dim == 0:
        at = int(ragged[0]) if len(ragged) else 0
        raise InputError(
            f"{where}, row {first_row + at + 1}: a {lengths[at]}-d vector where the others are "
            f"{dim}-d"
        )
    values = column.flatten()
    flat = values.fill_null(np.nan).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    matrix = flat.reshape(len(column), dim)
    bad = np.flatnonzero(~np.isfinite(matrix).all(1))
    if len(bad):
        raise InputError(
            f"{where}, row {first_row + int(bad[0]) + 1}: a value is NaN, null or infinite"
        )
    return matrix


def dataset_vectors(spec: DatasetSpec) -> Iterator[tuple[pl.Series, np.ndarray]]:
    """(text hashes, vectors) of the dataset's non-empty texts, batch by batch, each distinct text
    once per batch (its first row's vector); every vector is checked, and all must have one
    dimension."""
    import pyarrow.parquet as pq

    dim = None
    for path in spec.files:
        file = pq.ParquetFile(path)
        columns = [spec.text_column, spec.embedding_column]
        row = 0
        for batch in file.iter_batches(batch_size=BATCH_ROWS, columns=columns):
            vectors = _matrix(batch.column(1), path, spec.embedding_column, row, dim)
            dim = vectors.shape[1]
            texts = pl.from_arrow(batch.column(0)).cast(pl.String)
            frame = clean_texts(pl.DataFrame({"text": texts}).with_row_index("i"))
            frame = frame.with_columns(text_hash=text_hash(frame["text"])).unique(
                "text_hash", keep="first", maintain_order=True
            )
            row += batch.num_rows
            if frame.height:
                yield frame["text_hash"], vectors[frame["i"].to_numpy()]
