"""Read a dataset's files into one validated table of texts."""

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from ..errors import InputError
from .datasets import DatasetSpec

TEXTS_SCHEMA = {
    "row_idx": pl.Int32,
    "text_id": pl.String,
    "text": pl.String,
    "text_hash": pl.String,
    "duplicate_of": pl.Int32,
    "source_file": pl.String,
    "ground_truth": pl.String,
    "metadata": pl.String,
}


@dataclass(frozen=True)
class IngestReport:
    rows_read: int
    empty_dropped: int
    duplicates: int
    undecodable_bytes: int
    files: int


def _decode(path: Path) -> tuple[str, int]:
    """UTF-8 text of a file; bytes that are not UTF-8 become U+FFFD and are counted."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig"), 0
    except UnicodeDecodeError:
        text = raw.decode("utf-8-sig", errors="replace")
        return text, text.count("\ufffd") - raw.decode("utf-8-sig", errors="ignore").count("\ufffd")


def _read_file(path: Path, spec: DatasetSpec) -> tuple[pl.DataFrame, int, list[str]]:
    """The file's rows (of a Parquet file only the columns the spec names, so a vector column is
    not read here), the undecodable bytes replaced, and every column the file has."""
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty")
    if spec.embedding_column is not None and path.suffix != ".parquet":
        raise InputError(
            f"{path}: embedding_column {spec.embedding_column!r} needs Parquet files (a list or "
            f"array column of floats), not {path.suffix[1:]}"
        )
    text, bad = ("", 0) if path.suffix == ".parquet" else _decode(path)
    text_column = spec.text_column
    try:
        if path.suffix == ".parquet":
            columns = list(pl.read_parquet_schema(path))
            wanted = {
                text_column,
                spec.id_column,
                spec.label_column,
                spec.user_column,
                *spec.metadata_columns,
            }
            frame = pl.read_parquet(path, columns=[c for c in columns if c in wanted])
        elif path.suffix == ".csv":
            frame = pl.read_csv(io.StringIO(text), infer_schema=False)
        else:
            frame = pl.read_ndjson(io.StringIO(text), infer_schema_length=None)
    except Exception as err:  # polars raises several error types for malformed files
        raise InputError(f"{path}: cannot be read as {path.suffix[1:]} ({err})") from err
    if path.suffix != ".parquet":
        columns = frame.columns
    if path.suffix in (".jsonl", ".ndjson"):
        _require_json_strings(text, path, text_column)
    elif text_column in frame.columns and frame[text_column].dtype not in (pl.String, pl.Null):
        raise InputError(
            f"{path}: column {text_column!r} holds {frame[text_column].dtype} values, not text"
        )
    return frame, bad, columns


def _require_json_strings(text: str, path: Path, column: str) -> None:
    """JSON numbers, booleans, lists or objects in the text column are errors, not strings."""
    for number, line in enumerate(text.splitlines(), 1):
        row = json.loads(line) if line.strip() else None
        value = row.get(column) if isinstance(row, dict) else None
        if value is not None and not isinstance(value, str):
            raise InputError(
                f"{path}, line {number}: column {column!r} holds {type(value).__name__} "
                f"{json.dumps(value)[:60]}, not text; quote it in the file to cluster it as text"
            )


def _require_columns(columns: list[str], path: Path, spec: DatasetSpec) -> None:
    wanted = {
        "text_column": spec.text_column,
        "id_column": spec.id_column,
        "label_column": spec.label_column,
        "embedding_column": spec.embedding_column,
        "user_column": spec.user_column,
    }
    wanted |= {f"metadata_columns[{i}]": c for i, c in enumerate(spec.metadata_columns)}
    for role, column in wanted.items():
        if column is not None and column not in columns:
            raise InputError(
                f"{path}: no column {column!r} ({role}); its columns are {columns}. "
                f"Set {role} in {spec.path.with_suffix('').name}.yaml beside the dataset."
            )


def _as_string(frame: pl.DataFrame, column: str | None) -> pl.Expr:
    if column is None:
        return pl.lit(None, dtype=pl.String)
    return pl.col(column).cast(pl.String)


def _normalise(frame: pl.DataFrame, path: Path, spec: DatasetSpec, root: Path) -> pl.DataFrame:
    meta = (
        pl.struct([pl.col(c) for c in spec.metadata_columns]).struct.json_encode()
        if spec.metadata_columns
        else pl.lit(None, dtype=pl.String)
    )
    return frame.select(
        text=_as_string(frame, spec.text_column),
        text_id=_as_string(frame, spec.id_column),
        ground_truth=_as_string(frame, spec.label_column),
        metadata=meta,
        user_id=_as_string(frame, spec.user_column),
        source_file=pl.lit(str(path.relative_to(root)) if path != root else path.name),
        line=pl.int_range(pl.len(), dtype=pl.Int32),
    )


def clean_texts(frame: pl.DataFrame) -> pl.DataFrame:
    """The rows with a non-empty `text`, its whitespace runs as one space and none at either end:
    the text that is hashed and clustered."""
    return frame.with_columns(pl.col("text").str.replace_all(r"\s+", " ").str.strip_chars()).filter(
        pl.col("text").is_not_null() & (pl.col("text") != "")
    )


def text_hash(texts: pl.Series) -> pl.Series:
    """Stable content hash per text (blake2b-128, hex): the embedding cache key."""
    digests = [hashlib.blake2b(t.encode(), digest_size=16).hexdigest() for t in texts.to_list()]
    return pl.Series(texts.name, digests, dtype=pl.String)


def read_texts(spec: DatasetSpec) -> tuple[pl.DataFrame, int]:
    """Every row of a text dataset (text, text_id, ground_truth, metadata, user_id, source_file,
    line), and the undecodable bytes replaced."""
    if not spec.files:
        raise InputError(f"{spec.path}: no .csv, .parquet or .jsonl files found")
    frames, bad = [], 0
    root = spec.path if spec.path.is_dir() else spec.path.parent
    for path in spec.files:
        frame, bad_bytes, columns = _read_file(path, spec)
        if frame.height == 0:
            raise InputError(f"{path}: the file has a header but no rows")
        _require_columns(columns, path, spec)
        frames.append(_normalise(frame, path, spec, root))
        bad += bad_bytes
    return pl.concat(frames), bad


def finish_texts(frame: pl.DataFrame, spec: DatasetSpec, what: str) -> pl.DataFrame:
    """The rows of `frame` (read_texts' columns, any others kept) with a non-empty text,
    whitespace-normalised, hashed, numbered (`row_idx`) and duplicates marked; an id given twice
    is an error (`what` names the text column in messages)."""
    rows_read = frame.height
    texts = clean_texts(frame)
    if texts.height == 0:
        raise InputError(f"{spec.path}: {what} holds no non-empty text in {rows_read} rows")
    texts = texts.with_columns(
        text_id=pl.coalesce(
            "text_id", pl.col("source_file") + ":" + pl.col("line").cast(pl.String)
        ),
        text_hash=text_hash(texts["text"]),
        row_idx=pl.int_range(pl.len(), dtype=pl.Int32),
    )
    first = texts.group_by("text_hash").agg(first_idx=pl.col("row_idx").min())
    texts = (
        texts.join(first, on="text_hash")
        .with_columns(
            duplicate_of=pl.when(pl.col("first_idx") != pl.col("row_idx")).then(pl.col("first_idx"))
        )
        .sort("row_idx")
        .drop("first_idx")
    )
    repeated = texts.filter(pl.col("text_id").is_duplicated())
    if repeated.height:
        where = repeated.group_by("text_id", maintain_order=True).agg(
            pl.format("{} row {}", "source_file", pl.col("line") + 1).str.join(", ")
        )
        shown = "; ".join(f"{i!r} at {lines}" for i, lines in where.head(3).rows())
        raise InputError(
            f"{spec.path}: id column {spec.id_column!r} repeats {where.height} ids "
            f"({repeated.height} rows), e.g. {shown}"
        )
    return texts


def report_of(texts: pl.DataFrame, rows_read: int, bad: int, spec: DatasetSpec) -> IngestReport:
    return IngestReport(
        rows_read=rows_read,
        empty_dropped=rows_read - texts.height,
        duplicates=int(texts["duplicate_of"].is_not_null().sum()),
        undecodable_bytes=bad,
        files=len(spec.files),
    )


def load_texts(spec: DatasetSpec) -> tuple[pl.DataFrame, IngestReport]:
    """All non-empty texts of a dataset, whitespace-normalised, hashed, duplicates marked."""
    frame, bad = read_texts(spec)
    texts = finish_texts(frame, spec, f"column {spec.text_column!r}")
    report = report_of(texts, frame.height, bad, spec)
    return texts.select(TEXTS_SCHEMA.keys()).cast(TEXTS_SCHEMA), report


def content_hash(texts: pl.DataFrame) -> str:
    """One hash of the ordered text hashes: changes whenever any text, or the order, changes."""
    return hashlib.blake2b(
        "\n".join(texts["text_hash"].to_list()).encode(), digest_size=16
    ).hexdigest()
