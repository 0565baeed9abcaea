"""Datasets are files (CSV, Parquet, JSONL) or folders of them under one directory.

An optional `<name>.yaml` beside a file or folder says which columns to read, and whether a row
is one text (`kind: texts`, the default) or one conversation (`kind: conversations`).
"""

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import InputError

DATA_SUFFIXES = (".csv", ".parquet", ".jsonl", ".ndjson")
TEXT_FIELDS = {"text_column", "embedding_column"}  # kind: texts only
TURNS_FIELDS = {"conversation_column", "order_column", "role_column", "content_column"}
CONVERSATION_FIELDS = {"format", "messages_column", *TURNS_FIELDS}  # kind: conversations only
SPEC_FIELDS = {
    "kind",
    "id_column",
    "metadata_columns",
    "label_column",
    "user_column",
    *TEXT_FIELDS,
    *CONVERSATION_FIELDS,
}
KINDS = ("texts", "conversations")
FORMATS = ("messages", "lmsys", "turns")  # how a conversation dataset lays out its messages


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
    user_column: str | None = None  # the person: a privacy threshold counts distinct users
    kind: str = "texts"  # or "conversations"
    format: str | None = None  # conversations: "messages", "lmsys" or "turns"
    messages_column: str | None = None  # messages, lmsys: a list of {role, content} per row
    conversation_column: str | None = None  # turns (one per row): which conversation,
    order_column: str | None = None  # its position in it,
    role_column: str | None = None  # who speaks
    content_column: str | None = None  # and what
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
    for name in SPEC_FIELDS - {"metadata_columns", "kind", "format"}:
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
    _check_kind(spec, spec_path)
    return spec


def _check_kind(spec: dict, spec_path: Path) -> None:
    """`kind` and `format` are known values, and no setting belongs to another kind or format."""
    given = {name for name, value in spec.items() if value is not None}
    kind = spec.get("kind") or "texts"
    if kind not in KINDS:
        raise InputError(f"{spec_path}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "texts":
        if given & CONVERSATION_FIELDS:
            name = sorted(given & CONVERSATION_FIELDS)[0]
            raise InputError(
                f"{spec_path}: {name} is a setting of conversation datasets; add "
                f"'kind: conversations' or remove it"
            )
        return
    if given & TEXT_FIELDS:
        name = sorted(given & TEXT_FIELDS)[0]
        raise InputError(
            f"{spec_path}: {name} is a setting of text datasets, not of kind conversations "
            f"(their messages are read from messages_column, or with format turns from "
            f"content_column)"
        )
    format_ = spec.get("format") or "messages"
    if format_ not in FORMATS:
        raise InputError(
            f"{spec_path}: format must be one of {', '.join(FORMATS)}, got {format_!r}"
        )
    if format_ == "turns":
        wrong = given & {"messages_column", "id_column"}
        hint = "conversation_column names the conversation of each turn"
    else:
        wrong = given & TURNS_FIELDS
        hint = "each row holds a whole conversation in messages_column"
    if wrong:
        raise InputError(
            f"{spec_path}: {sorted(wrong)[0]} is not a setting of format {format_} ({hint})"
        )


def _spec_file(path: Path) -> Path:
    """The optional YAML beside a dataset file or folder."""
    return path.parent / f"{path.name if path.is_dir() else path.stem}.yaml"


def _conversation_settings(spec: dict) -> dict:
    """The settings of a conversation dataset, each format's defaults filled in."""
    if (spec.get("kind") or "texts") == "texts":
        return {}
    format_ = spec.get("format") or "messages"
    if format_ == "turns":
        return {
            "format": format_,
            "conversation_column": spec.get("conversation_column") or "conversation_id",
            "order_column": spec.get("order_column") or "turn",
            "role_column": spec.get("role_column") or "role",
            "content_column": spec.get("content_column") or "content",
        }
    default = "conversation" if format_ == "lmsys" else "messages"
    return {"format": format_, "messages_column": spec.get("messages_column") or default}


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
        user_column=spec.get("user_column"),
        kind=spec.get("kind") or "texts",
        **_conversation_settings(spec),
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
