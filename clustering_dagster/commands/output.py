"""Printing: rich tables for people, JSON (`--json`) for jq and agents."""

import json
import os
import re
import sys
from collections.abc import Sequence
from datetime import date, datetime

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

# Piped output (a file, less, a test) is not cut to 80 columns: COLUMNS, or 160.
console = Console(highlight=False)
if not console.is_terminal:
    console = Console(highlight=False, width=int(os.environ.get("COLUMNS", 160)))

# Counts on the command line stay far below what DuckDB's LIMIT and numpy take (2^63 overflows).
MAX_COUNT = 1_000_000_000


def count(minimum: int) -> click.IntRange:
    """An integer option from `minimum` to MAX_COUNT: anything else is a usage error."""
    return click.IntRange(minimum, MAX_COUNT)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
run_config_option = click.option(
    "--run-config",
    "-r",
    default=None,
    help="Run configuration (default: the dataset's only one, or default).",
)
alias_option = click.option(
    "--alias",
    default=None,
    help="Whose cluster names: an LLM summary alias, or 'keywords' (default: an LLM alias if any).",
)


# Characters a terminal acts on instead of showing: C0 and C1 controls (ESC starts colour, cursor,
# clear-screen, hyperlink and title sequences; U+009B is a one-character CSI) and the bidi
# overrides and isolates that reorder what is shown.
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
# Of those, what json.dumps(ensure_ascii=False) leaves raw inside strings (it escapes C0 itself).
JSON_UNSAFE = re.compile("[\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")

facet_option = click.option(
    "--facet",
    multiple=True,
    metavar="FACET=VALUE",
    help="Conversation datasets: only texts whose facet matches, e.g. language=fr, "
    "concerning>=3, user_turns>1 (repeatable: all must match).",
)


def facet_line(facets: dict) -> str:
    """A cluster's facets in one line: languages, user turns, mean concerning score."""
    languages = ", ".join(f"{k} {100 * v:.0f}%" for k, v in facets["languages"].items())
    turns = facets["user_turns"]
    concerning = facets["mean_concerning"]
    return (
        f"facets: {facets['conversations']} conversations; languages {languages}; user turns "
        f"mean {turns['mean']}, median {turns['median']:g}, max {turns['max']}; concerning "
        + ("n/a (offline facets)" if concerning is None else f"mean {concerning}")
    )


def visible(text: str) -> str:
    """`text` with every control character shown as an escape (`\\x1b`, `\\u202e`), so data
    can neither drive the terminal nor hide itself."""
    return UNSAFE.sub(lambda m: _escape(m.group()), text)


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _plain(value):
    """JSON-ready values: DuckDB maps (lists of key/value structs) as objects, times as text."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, dict) and set(v) == {"key", "value"} for v in value)
    ):
        return {v["key"]: _plain(v["value"]) for v in value}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, float):
        return round(value, 6)
    return value


def emit_json(value, lines: bool = False) -> None:
    """Indented JSON, or with `lines` one compact line (JSON Lines, one object per answer)."""
    indent = None if lines else 2
    text = json.dumps(_plain(value), ensure_ascii=False, indent=indent)
    # exact JSON, with the controls json.dumps leaves raw (C1, bidi) escaped as \\uXXXX
    text = JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def write_data(text: str) -> None:
    """Data (CSV) on stdout exactly as it is, for a file or a pipe; on a terminal with its control
    characters escaped, as `ls` shows odd file names."""
    sys.stdout.write(visible(text) if sys.stdout.isatty() else text)
    sys.stdout.flush()


def show_table(
    rows: Sequence[dict],
    columns: Sequence[tuple[str, str]],
    title: str | None = None,
    wrap: str | None = None,
) -> None:
    """`columns` = (key, header); a header ending in '>' is right-aligned; `wrap` is the column
    that takes the remaining width."""
    title = None if title is None else escape(visible(title))
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for key, header in columns:
        table.add_column(
            header.rstrip(">"),
            justify="right" if header.endswith(">") else "left",
            overflow="fold",
            ratio=1 if key == wrap else None,
            no_wrap=key != wrap,
        )
    for row in rows:
        table.add_row(*[escape(visible(_cell(row.get(key)))) for key, _ in columns])
    console.print(table)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def curation_marks(node: dict) -> str:
    """What people set on a node, for a table: '  [person: name, place; tags: a, b; flagged]'."""
    person = [what for what, key in (("name", "named_by"), ("place", "placed_by"))
              if node.get(key) == "person"]  # fmt: skip
    parts = ["person: " + ", ".join(person)] if person else []
    if node.get("tags"):
        parts.append("tags: " + ", ".join(node["tags"]))
    if node.get("flag"):
        parts.append("flagged")
    return f"  [{'; '.join(parts)}]" if parts else ""


def say(text: str) -> None:
    console.print(escape(visible(text)))


def note(text: str) -> None:
    """A line for people on stderr, so stdout stays data."""
    click.echo(visible(text), err=True)
