"""`clustering-dagster curate`: people's edits of a partition's tree, and their history."""

import getpass
import os
from contextlib import contextmanager
from pathlib import Path

import click

from ..core.config.settings import lock_timeout_s
from ..core.curation.edits import edit_dict
from ..core.curation.records import edit_history
from ..core.curation.requests import EditRequest, make_edit
from ..core.results.reading import read_only, resolve
from ..core.storage.store import connect, ensure_schema
from .output import emit_json, json_option, note, run_config_option, say, show_table


def default_author() -> str:
    """Who makes an edit: CLUSTERING_AUTHOR, else the login name."""
    try:
        return os.environ.get("CLUSTERING_AUTHOR") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@contextmanager
def writing(db: Path):
    """A read-write connection to the results file, waiting (CLUSTERING_LOCK_TIMEOUT_S) while a
    run writes; a missing file or one without results is one line, never a new file."""
    with read_only(db):
        pass
    conn = connect(db, lock_timeout_s(), on_wait=note)
    try:
        ensure_schema(conn)
        yield conn
    finally:
        conn.close()


@click.group(name="curate")
def curate() -> None:
    """Correct a partition's tree: rename, merge, move, move-texts, split, tag, flag, undo, and
    read the history. Edits are rows apart from the machine's results; every command, the map,
    the explorer and exports show the tree with them, and every re-clustering applies them again
    (those whose clusters split, merged or vanished: `curate attention`, `changes`)."""


def _edit_options(command):
    for option in reversed(
        [
            run_config_option,
            click.option(
                "--author",
                default=None,
                help="Who makes it (default: CLUSTERING_AUTHOR or the login name).",
            ),  # fmt: skip
            click.option("--note", default=None, help="Why (kept in the history)."),
            json_option,
        ]
    ):
        command = option(command)
    return command


def _make(db: Path, dataset: str, run_config, request: EditRequest, as_json: bool) -> None:
    with writing(db) as conn:
        part = resolve(conn, dataset, run_config)
        made = make_edit(conn, part, request)
    shown = edit_dict(part, made.edit)
    if as_json:
        return emit_json(shown)
    say(f"edit {shown['edit_id']} ({part}): {shown['what']}")


def _request(kind, node_id, value, author, note_text, text_ids=()) -> EditRequest:
    return EditRequest(kind, node_id, value, tuple(text_ids), author or default_author(), note_text)


@curate.command()
@click.argument("dataset")
@click.argument("cluster")
@click.argument("name")
@click.option("--summary", default=None, help="A description to show with the name.")
@_edit_options
@click.pass_obj
def rename(db, dataset, cluster, name, summary, run_config, author, note, as_json):
    """Name CLUSTER (e.g. fine/12) NAME; a person's name beats the machine's."""
    value = {"name": name} | ({"summary": summary} if summary else {})
    _make(db, dataset, run_config, _request("rename", cluster, value, author, note), as_json)


@curate.command()
@click.argument("dataset")
@click.argument("cluster")
@click.argument("others", nargs=-1, required=True)
@_edit_options
@click.pass_obj
def merge(db, dataset, cluster, others, run_config, author, note, as_json):
    """Merge OTHERS (clusters of CLUSTER's level) into CLUSTER: their children and texts move."""
    request = _request("merge", cluster, {"others": list(others)}, author, note)
    _make(db, dataset, run_config, request, as_json)


@curate.command()
@click.argument("dataset")
@click.argument("cluster")
@click.argument("parent")
@_edit_options
@click.pass_obj
def move(db, dataset, cluster, parent, run_config, author, note, as_json):
    """Move CLUSTER, with everything under it, under PARENT (a cluster one level up)."""
    request = _request("move", cluster, {"parent": parent}, author, note)
    _make(db, dataset, run_config, request, as_json)


@curate.command(name="move-texts")
@click.argument("dataset")
@click.argument("text_ids", nargs=-1, required=True)
@click.option("--to", "cluster", required=True, help="The cluster of the finest level they join.")
@_edit_options
@click.pass_obj
def move_texts(db, dataset, text_ids, cluster, run_config, author, note, as_json):
    """Move the texts TEXT_IDS (ids as `texts` lists them) into the finest-level cluster --to."""
    request = _request("move_texts", cluster, {}, author, note, text_ids)
    _make(db, dataset, run_config, request, as_json)


@curate.command()
@click.argument("dataset")
@click.argument("cluster")
@click.argument("text_ids", nargs=-1, required=True)
@click.option("--name", required=True, help="The new cluster's name.")
@_edit_options
@click.pass_obj
def split(db, dataset, cluster, text_ids, name, run_config, author, note, as_json):
    """Take the texts TEXT_IDS out of CLUSTER (finest level) into a new cluster beside it."""
    request = _request("split", cluster, {"name": name}, author, note, text_ids)
    _make(db, dataset, run_config, request, as_json)


@curate.command()
@click.argument("dataset")
@click.argument("cluster")
@click.argument("tag")
@_edit_options
@click.pass_obj
def tag(db, dataset, cluster, tag, run_config, author, note, as_json):
    """Tag CLUSTER with TAG."""
    _make(db, dataset, run_config, _request("tag", cluster, {"tag": tag}, author, note), as_json)


@curate.command()
@click.argument("dataset")
@click.argument("cluster")
@click.argument("reason")
@_edit_options
@click.pass_obj
def flag(db, dataset, cluster, reason, run_config, author, note, as_json):
    """Flag CLUSTER for review, saying why (REASON)."""
    request = _request("flag", cluster, {"note": reason}, author, note)
    _make(db, dataset, run_config, request, as_json)


@curate.command()
@click.argument("dataset")
@click.argument("edit_id", type=int)
@_edit_options
@click.pass_obj
def undo(db, dataset, edit_id, run_config, author, note, as_json):
    """Undo edit EDIT_ID (as `curate history` numbers them)."""
    _make(db, dataset, run_config, _request("undo", None, {"edit": edit_id}, author, note), as_json)


def _log_rows(db: Path, dataset: str, run_config) -> tuple:
    with read_only(db) as conn:
        part = resolve(conn, dataset, run_config)
        return part, edit_history(conn, part)


@curate.command()
@click.argument("dataset")
@click.argument("cluster", required=False)
@run_config_option
@json_option
@click.pass_obj
def history(db, dataset, cluster, run_config, as_json):
    """Every edit of DATASET (or those naming CLUSTER), oldest first: who, when, what, and how it
    stands against the latest result (applied, undone, needs attention)."""
    part, rows = _log_rows(db, dataset, run_config)
    if cluster:
        naming = {r["edit_id"] for r in rows if cluster in r["nodes"]}
        rows = [r for r in rows if r["edit_id"] in naming or r["value"].get("edit") in naming]
    if as_json:
        return emit_json([{k: v for k, v in r.items() if k != "nodes"} for r in rows])
    if not rows:
        return note(f"{part}: no edits" + (f" naming {cluster}" if cluster else ""))
    show_table(
        rows,
        [
            ("edit_id", "edit>"),
            ("made_at", "when"),
            ("author", "who"),
            ("what", "what"),
            ("status", "status"),
            ("note", "note"),
        ],  # fmt: skip
        title=f"{part}: edits" + (f" naming {cluster}" if cluster else ""),
        wrap="what",
    )


@curate.command()
@click.argument("dataset")
@run_config_option
@json_option
@click.pass_obj
def attention(db, dataset, run_config, as_json):
    """The edits that no longer apply after a re-clustering (their cluster split, merged or
    vanished), with the clusters that hold their texts now."""
    part, rows = _log_rows(db, dataset, run_config)
    rows = [r for r in rows if r["status"] == "needs_attention"]
    if as_json:
        return emit_json([{k: v for k, v in r.items() if k != "nodes"} for r in rows])
    if not rows:
        return note(f"{part}: no edit needs attention")
    show_attention(part, rows)


def show_attention(part, rows: list[dict]) -> None:
    for row in rows:
        row["now_in"] = (
            "; ".join(
                f"{h['node_id']} {h['name'] or ''} ({h['share']:.0%})" for h in row["holders"]
            )
            or "none of its texts is left"
        )
    show_table(
        rows,
        [("edit_id", "edit>"), ("what", "what"), ("reason", "why"), ("now_in", "its texts now in")],
        title=f"{part}: edits needing attention",
        wrap="now_in",
    )


def print_attention(db: Path, dataset: str, run_config) -> None:
    """The edits needing attention, if any (for `changes`)."""
    part, rows = _log_rows(db, dataset, run_config)
    rows = [r for r in rows if r["status"] == "needs_attention"]
    if rows:
        show_attention(part, rows)
