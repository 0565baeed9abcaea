"""Read a conversation dataset's files into one validated table of conversations.

Its YAML says `kind: conversations` and a `format`:
- `messages`: one conversation per row (JSONL or Parquet), a list of `{role, content}` messages
  in OpenAI chat format in `messages_column`;
- `lmsys`: the same in LMSYS-Chat-1M's columns (`conversation`, `conversation_id`, and `model`
  and `language`, kept as metadata);
- `turns`: one message per row (CSV, Parquet or JSONL), grouped by `conversation_column` and
  ordered by the numbers in `order_column`.
"""

import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from ..errors import InputError
from .datasets import DatasetSpec
from .ingest import _decode

ROLES = ("system", "user", "assistant", "tool")
ROLE_ALIASES = {  # other datasets' names for the same roles (ShareGPT, Gemini, old OpenAI)
    "human": "user",
    "gpt": "assistant",
    "bot": "assistant",
    "chatbot": "assistant",
    "model": "assistant",
    "developer": "system",
    "function": "tool",
}
LMSYS_METADATA = ("model", "language")  # kept as metadata when an lmsys file has them
MESSAGE = pl.Struct({"role": pl.String, "content": pl.String})
CONVERSATIONS_SCHEMA = {
    "conversation_id": pl.String,
    "messages": pl.List(MESSAGE),
    "user_id": pl.String,
    "ground_truth": pl.String,
    "metadata": pl.String,
    "source_file": pl.String,
    "line": pl.Int32,
}
SUFFIXES = {  # the files each format reads
    "messages": (".jsonl", ".ndjson", ".parquet"),
    "lmsys": (".jsonl", ".ndjson", ".parquet"),
    "turns": (".csv", ".parquet", ".jsonl", ".ndjson"),
}
_WHITESPACE = re.compile(r"\s+")  # as `clean_texts` in ingest.py


@dataclass(frozen=True)
class ConversationReport:
    rows_read: int
    conversations: int
    messages: int
    files: int
    undecodable_bytes: int


@dataclass(frozen=True)
class _File:
    """One file's rows as dicts with their 0-based line (JSONL) or row (CSV, Parquet)."""

    path: Path
    source: str  # its name relative to the dataset, as in `source_file`
    rows: list[tuple[int, dict]]
    columns: list[str]
    unit: str  # "line" or "row"
    undecodable_bytes: int

    def at(self, index: int) -> str:
        return f"{self.path}, {self.unit} {index + 1}"


def _describe(value) -> str:
    if value is None:
        return "null"
    return f"{type(value).__name__} {json.dumps(value, default=str, ensure_ascii=False)[:60]}"


def _read(path: Path, spec: DatasetSpec, root: Path) -> _File:
    if path.suffix not in SUFFIXES[spec.format]:
        raise InputError(
            f"{path}: format {spec.format} reads "
            f"{', '.join(s[1:] for s in SUFFIXES[spec.format])} files, not {path.suffix[1:]}"
        )
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty")
    source = str(path.relative_to(root)) if path != root else path.name
    if path.suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path, source)
    bad = 0
    try:
        if path.suffix == ".parquet":  # only the columns the spec may read
            columns = list(pl.read_parquet_schema(path))
            wanted = [c for c in columns if c in _wanted(spec)] or columns[:1]
            frame = pl.read_parquet(path, columns=wanted)
        else:
            text, bad = _decode(path)
            frame = pl.read_csv(io.StringIO(text), infer_schema=False)
            columns = frame.columns
    except Exception as err:  # polars raises several error types for malformed files
        raise InputError(f"{path}: cannot be read as {path.suffix[1:]} ({err})") from err
    if frame.height == 0:
        raise InputError(f"{path}: the file has a header but no rows")
    rows = list(enumerate(frame.iter_rows(named=True)))
    return _File(path, source, rows, columns, "row", bad)


def _wanted(spec: DatasetSpec) -> set[str]:
    named = (
        spec.messages_column,
        spec.id_column,
        spec.label_column,
        spec.user_column,
        spec.conversation_column,
        spec.order_column,
        spec.role_column,
        spec.content_column,
        *spec.metadata_columns,
        *(("conversation_id", *LMSYS_METADATA) if spec.format == "lmsys" else ()),
    )
    return {c for c in named if c is not None}


def _read_jsonl(path: Path, source: str) -> _File:
    text, bad = _decode(path)
    rows, columns = [], {}
    for index, line in enumerate(text.split("\n")):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}, line {index + 1}: not valid JSON ({err.msg})") from err
        if not isinstance(row, dict):
            raise InputError(
                f"{path}, line {index + 1}: expected a JSON object per line, got {_describe(row)}"
            )
        rows.append((index, row))
        columns.update(dict.fromkeys(row))
    if not rows:
        raise InputError(f"{path}: the file has no rows")
    return _File(path, source, rows, list(columns), "line", bad)


def _require_columns(file: _File, spec: DatasetSpec, wanted: dict[str, str | None]) -> None:
    for role, column in wanted.items():
        if column is not None and column not in file.columns:
            raise InputError(
                f"{file.path}: no column {column!r} ({role}); its columns are {file.columns}. "
                f"Set {role} in {spec.path.with_suffix('').name}.yaml beside the dataset."
            )


def _require_value(file: _File, index: int, row: dict, column: str, role: str) -> None:
    """A column every row of a JSONL file needs (Parquet and CSV rows have every column)."""
    if column not in row:
        raise InputError(
            f"{file.at(index)}: no column {column!r} ({role}); this row's columns are "
            f"{list(row)}. Set {role} in the dataset's YAML."
        )


def _as_text(value) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _role(value, where: str) -> str:
    if value is None:
        raise InputError(f"{where} has no role")
    role = value.strip().lower() if isinstance(value, str) else value
    role = ROLE_ALIASES.get(role, role) if isinstance(role, str) else role
    if role not in ROLES:
        aliases = ", ".join(f"{a}->{r}" for a, r in ROLE_ALIASES.items())
        raise InputError(
            f"{where} has role {_describe(value)}; roles are {', '.join(ROLES)} ({aliases})"
        )
    return role


def _content(value, where: str, tool_calls: bool = False) -> str:
    """The message's text, whitespace runs as one space: a string, or the text parts of an
    OpenAI content list joined (images and other parts are left out)."""
    if value is None:
        if tool_calls:  # an assistant message that only calls tools
            return ""
        raise InputError(f"{where} has no content")
    if isinstance(value, list):
        parts = []
        for part in value:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type", "text") == "text":
                if not isinstance(part.get("text"), str):
                    raise InputError(f"{where} has a text part without text: {_describe(part)}")
                parts.append(part["text"])
            elif not isinstance(part, dict):
                raise InputError(f"{where} has a content part {_describe(part)}, not an object")
        value = " ".join(parts)
    elif not isinstance(value, str):
        raise InputError(f"{where} has content {_describe(value)}, not text")
    return _WHITESPACE.sub(" ", value).strip()


def _messages(value, where: str, column: str) -> list[dict]:
    """The non-empty messages of one conversation, roles checked, contents normalised."""
    if not isinstance(value, list):
        raise InputError(
            f"{where}: column {column!r} holds {_describe(value)}, not a list of messages"
        )
    messages = []
    for number, message in enumerate(value, 1):
        at = f"{where}: column {column!r}, message {number}"
        if not isinstance(message, dict):
            raise InputError(f"{at} is {_describe(message)}, not a {{role, content}} object")
        role = _role(message.get("role"), at)
        content = _content(message.get("content"), at, bool(message.get("tool_calls")))
        if content:
            messages.append({"role": role, "content": content})
    _require_user(messages, bool(value), where, column)
    return messages


def _require_user(messages: list[dict], any_message: bool, where: str, column: str) -> None:
    if not any_message:
        raise InputError(f"{where}: column {column!r} holds an empty conversation (no messages)")
    if not any(m["role"] == "user" for m in messages):
        raise InputError(
            f"{where}: column {column!r} holds a conversation with no user message with content"
        )


def _metadata(row: dict, columns: list[str]) -> str | None:
    if not columns:
        return None
    values = {c: row.get(c) for c in columns}
    return json.dumps(values, ensure_ascii=False, separators=(",", ":"), default=str)


def _conversation(file: _File, index: int, conversation_id, messages, row, columns, spec) -> dict:
    return {
        "conversation_id": _as_text(conversation_id) or f"{file.source}:{index}",
        "messages": messages,
        "user_id": _as_text(row.get(spec.user_column)) if spec.user_column else None,
        "ground_truth": _as_text(row.get(spec.label_column)) if spec.label_column else None,
        "metadata": _metadata(row, columns),
        "source_file": file.source,
        "line": index,
    }


def _common_columns(spec: DatasetSpec) -> dict[str, str | None]:
    wanted = {"label_column": spec.label_column, "user_column": spec.user_column}
    return wanted | {f"metadata_columns[{i}]": c for i, c in enumerate(spec.metadata_columns)}


def _whole_conversations(file: _File, spec: DatasetSpec) -> list[dict]:
    """Formats messages and lmsys: one conversation per row."""
    id_column = spec.id_column
    metadata = list(spec.metadata_columns)
    if spec.format == "lmsys":
        if id_column is None and "conversation_id" in file.columns:
            id_column = "conversation_id"
        metadata += [c for c in LMSYS_METADATA if c in file.columns and c not in metadata]
    _require_columns(file, spec, {"id_column": id_column} | _common_columns(spec))
    column = spec.messages_column
    if file.unit == "row":
        _require_columns(file, spec, {"messages_column": column})
    conversations = []
    for index, row in file.rows:
        _require_value(file, index, row, column, "messages_column")
        messages = _messages(row[column], file.at(index), column)
        conversation_id = row.get(id_column) if id_column else None
        conversations.append(
            _conversation(file, index, conversation_id, messages, row, metadata, spec)
        )
    return conversations


def _order(value, where: str, column: str) -> float:
    number = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if value is None or isinstance(value, bool) or not isinstance(number, int | float):
        what = "is null" if value is None else f"holds {_describe(value)}, not a number"
        raise InputError(f"{where}: column {column!r} {what}; it gives each turn's order")
    if not math.isfinite(number):
        raise InputError(f"{where}: column {column!r} holds {value!r}, not a finite number")
    return float(number)


def _turn_conversations(file: _File, spec: DatasetSpec) -> list[dict]:
    """Format turns: one message per row, grouped by conversation and sorted by order."""
    names = {
        "conversation_column": spec.conversation_column,
        "order_column": spec.order_column,
        "role_column": spec.role_column,
        "content_column": spec.content_column,
    }
    _require_columns(file, spec, _common_columns(spec))
    if file.unit == "row":
        _require_columns(file, spec, names)
    grouped: dict[str, dict] = {}  # by conversation id, in the order of their first rows
    for index, row in file.rows:
        where = file.at(index)
        for role, column in names.items():
            _require_value(file, index, row, column, role)
        conversation_id = _as_text(row[spec.conversation_column])
        if conversation_id is None:
            raise InputError(
                f"{where}: column {spec.conversation_column!r} is null; every turn needs the "
                f"id of its conversation"
            )
        order = _order(row[spec.order_column], where, spec.order_column)
        at = f"{where}: column {spec.role_column!r}"
        role = _role(row[spec.role_column], at)
        at = f"{where}: column {spec.content_column!r}"
        content = _content(row[spec.content_column], at)
        group = grouped.setdefault(conversation_id, {"index": index, "row": row, "turns": {}})
        if order in group["turns"]:
            raise InputError(
                f"{where}: column {spec.order_column!r}: conversation {conversation_id!r} repeats "
                f"order {row[spec.order_column]!r} (also at {file.unit} "
                f"{group['turns'][order][0] + 1})"
            )
        group["turns"][order] = (index, role, content)
    conversations = []
    for conversation_id, group in grouped.items():
        turns = [group["turns"][order] for order in sorted(group["turns"])]
        messages = [{"role": role, "content": content} for _, role, content in turns if content]
        where = f"{file.at(group['index'])}: conversation {conversation_id!r}"
        _require_user(messages, True, where, spec.content_column)
        conversations.append(
            _conversation(
                file,
                group["index"],
                conversation_id,
                messages,
                group["row"],
                list(spec.metadata_columns),
                spec,
            )
        )
    return conversations


def _require_unique_ids(conversations: pl.DataFrame, spec: DatasetSpec, units: dict) -> None:
    repeated = conversations.filter(pl.col("conversation_id").is_duplicated())
    if not repeated.height:
        return
    where = repeated.group_by("conversation_id", maintain_order=True).agg(
        pl.struct("source_file", "line")
    )
    shown = "; ".join(
        f"{cid!r} at "
        + ", ".join(f"{p['source_file']} {units[p['source_file']]} {p['line'] + 1}" for p in places)
        for cid, places in where.head(3).rows()
    )
    column = spec.conversation_column if spec.format == "turns" else spec.id_column
    column = column or "conversation_id"
    raise InputError(
        f"{spec.path}: column {column!r} repeats {where.height} conversation ids "
        f"({repeated.height} conversations), e.g. {shown}"
    )


def load_conversations(spec: DatasetSpec) -> tuple[pl.DataFrame, ConversationReport]:
    """Every conversation of a dataset of kind conversations, validated, in file order: its
    messages with known roles and whitespace-normalised content (empty messages left out)."""
    if spec.kind != "conversations":
        raise InputError(
            f"{spec.path}: not a conversation dataset; set 'kind: conversations' in "
            f"{spec.path.with_suffix('').name}.yaml beside it"
        )
    if not spec.files:
        raise InputError(f"{spec.path}: no .csv, .parquet or .jsonl files found")
    root = spec.path if spec.path.is_dir() else spec.path.parent
    rows, bad, units = [], 0, {}
    rows_read = 0
    for path in spec.files:
        file = _read(path, spec, root)
        read = _turn_conversations if spec.format == "turns" else _whole_conversations
        rows.extend(read(file, spec))
        rows_read += len(file.rows)
        bad += file.undecodable_bytes
        units[file.source] = file.unit
    conversations = pl.DataFrame(rows, schema=CONVERSATIONS_SCHEMA)
    _require_unique_ids(conversations, spec, units)
    report = ConversationReport(
        rows_read=rows_read,
        conversations=conversations.height,
        messages=int(conversations["messages"].list.len().sum()),
        files=len(spec.files),
        undecodable_bytes=bad,
    )
    return conversations, report
