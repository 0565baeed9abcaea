"""Datasets are files (CSV, Parquet, JSONL) or folders of them under one directory.

An optional `<name>.yaml` beside a file or folder says which columns to read.
"""

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import InputError

DATA_SUFFIXES = (".csv", ".parquet", ".jsonl", ".ndjson")
SPEC_FIELDS = {"text_column", "id_column", "metadata_columns", "label_column"}


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
    if not isinstance(spec, dict) or set(spec) - SPEC_FIELDS:
        raise InputError(
            f"{spec_path}: expected a mapping with keys among {sorted(SPEC_FIELDS)}, got {spec!r}"
        )
    return spec


def _spec_for(path: Path) -> DatasetSpec:
    stem = path.name if path.is_dir() else path.stem
    spec = _read_spec_file(path.parent / f"{stem}.yaml")
    return DatasetSpec(
        key=slugify(stem),
        path=path,
        text_column=spec.get("text_column") or "text",
        id_column=spec.get("id_column"),
        metadata_columns=tuple(spec.get("metadata_columns") or ()),
        label_column=spec.get("label_column"),
        files=_data_files(path),
    )


def discover_datasets(root: Path) -> dict[str, DatasetSpec]:
    """Every dataset under `root`, by slugified key. Two names with one key are an error."""
    if not root.is_dir():
        return {}
    found: dict[str, DatasetSpec] = {}
    for path in sorted(root.iterdir()):
        if path.name.startswith(".") or not (path.is_dir() or path.suffix in DATA_SUFFIXES):
            continue
        spec = _spec_for(path)
        if spec.key in found:
            raise InputError(
                f"{found[spec.key].path.name} and {path.name} in {root} both make the dataset key "
                f"{spec.key!r}: rename one of them"
            )
        found[spec.key] = spec
    return found


def find_dataset(root: Path, key: str) -> DatasetSpec:
    datasets = discover_datasets(root)
    if key not in datasets:
        known = ", ".join(sorted(datasets)) or "none"
        raise InputError(f"no dataset {key!r} under {root} (known: {known})")
    return datasets[key]
