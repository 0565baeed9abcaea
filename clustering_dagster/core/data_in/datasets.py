"""Datasets are files (CSV, Parquet, JSONL) or folders of them under one directory.

An optional `<name>.yaml` beside a file or folder says which columns to read.
"""

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import InputError

DATA_SUFFIXES = (".csv", ".parquet", ".jsonl", ".ndjson")
SPEC_FIELDS = {"text_column", "id_column", "metadata_columns", "label_column", "embedding_column"}


def slugify(name: str) -> str:
    """A partition-key-safe name: lowercase ascii letters, digits and underscores."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "_", ascii_name.lower()).strip("_")
    if not slug:
        raise InputError(
            f"cannot make a dataset key from {name!r}: rename it with letters or digits"
        )
    return slug


@dataclass(frozen=True)
class DatasetSpec:
    key: str
    path: Path
    text_column: str = "text"
    id_column: str | None = None
    metadata_columns: tuple[str, ...] = ()
    label_column: str | None = None
    embedding_column: str | None = None  # Parquet only: the dataset brings its own vectors
    files: tuple[Path, ...] = field(default=())


def _data_files(path: Path) -> tuple[Path, ...]:
    if path.is_file():
        return (path,)
    return tuple(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in DATA_SUFFIXES))


def _read_spec_file(spec_path: Path) -> dict:
    if not spec_path.exists():
        return {}
    try:
        spec = yaml.safe_load(spec_path.read_text()) or {}
    except yaml.YAMLError as err:
        raise InputError(f"{spec_path}: not valid YAML ({err})") from err
    if not isinstance(spec, dict):
        raise InputError(f"{spec_path}: expected a mapping of settings, got {spec!r}")
    unknown = sorted(set(spec) - SPEC_FIELDS)
    if unknown:
        raise InputError(f"{spec_path}: unknown setting {unknown[0]!r}; use {sorted(SPEC_FIELDS)}")
    for name in SPEC_FIELDS - {"metadata_columns"}:
        if spec.get(name) is not None and not isinstance(spec[name], str):
            raise InputError(f"{spec_path}: {name} must be one column name, got {spec[name]!r}")
    columns = spec.get("metadata_columns")
    if columns is not None and not (
        isinstance(columns, list) and all(isinstance(c, str) for c in columns)
    ):
        raise InputError(
            f"{spec_path}: metadata_columns must be a list of column names, like [{columns}], "
            f"got {columns!r}"
        )
    return spec


def _spec_file(path: Path) -> Path:
    """The optional YAML beside a dataset file or folder."""
    return path.parent / f"{path.name if path.is_dir() else path.stem}.yaml"


def _spec_for(path: Path) -> DatasetSpec:
    spec = _read_spec_file(_spec_file(path))
    return DatasetSpec(
        key=slugify(path.name if path.is_dir() else path.stem),
        path=path,
        text_column=spec.get("text_column") or "text",
        id_column=spec.get("id_column"),
        metadata_columns=tuple(spec.get("metadata_columns") or ()),
        label_column=spec.get("label_column"),
        embedding_column=spec.get("embedding_column"),
        files=_data_files(path),
    )


def scan_datasets(root: Path) -> tuple[dict[str, DatasetSpec], dict[str, str]]:
    """Every valid dataset under `root` by key, and a message per entry that is not one (a bad
    name or YAML, or several names making one key: which is meant is for the user to say, by
    renaming). A bad entry never hides the others."""
    if not root.is_dir():
        return {}, {}
    named: dict[str, list[DatasetSpec]] = {}
    problems: dict[str, str] = {}
    for path in sorted(root.iterdir()):
        if path.name.startswith(".") or not (path.is_dir() or path.suffix in DATA_SUFFIXES):
            continue
        try:
            spec = _spec_for(path)
        except InputError as err:  # keyed by its dataset key where it has one
            try:
                problems[slugify(path.name if path.is_dir() else path.stem)] = str(err)
            except InputError:
                problems[path.name] = str(err)
            continue
        named.setdefault(spec.key, []).append(spec)
    found = {key: specs[0] for key, specs in named.items() if len(specs) == 1}
    for key, specs in named.items():
        if len(specs) > 1:
            names = " and ".join(s.path.name for s in specs)
            problems[key] = (
                f"{names} in {root} all make the dataset key {key!r}: rename all but one"
            )
    return found, problems


def find_dataset(root: Path, key: str) -> DatasetSpec:
    datasets, problems = scan_datasets(root)
    if key in problems:
        raise InputError(problems[key])
    if key not in datasets:
        known = ", ".join(sorted(datasets)) or "none"
        raise InputError(f"no dataset {key!r} under {root} (known: {known})")
    return datasets[key]


def _inputs(spec: DatasetSpec) -> list[Path]:
    spec_file = _spec_file(spec.path)
    return [*spec.files, *([spec_file] if spec_file.exists() else [])]


def fingerprint(spec: DatasetSpec) -> str:
    """Cheap change detector: names, sizes and modification times of the dataset's files."""
    stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in _inputs(spec)]
    return hashlib.blake2b(repr(stats).encode(), digest_size=16).hexdigest()


def source_hash(spec: DatasetSpec) -> str:
    """Hash of the bytes of the dataset's files and its YAML: changes only when content does."""
    digest = hashlib.blake2b(digest_size=16)
    for path in _inputs(spec):
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()
