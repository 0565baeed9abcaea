"""`clustering-dagster search`: texts and clusters nearest in meaning to a query, in one partition
or in all. `-` in place of the query reads one query per line from stdin and answers each (with
`--json`, one JSON object per line), loading the model and each partition's index once."""

import os
import sys
from pathlib import Path

import click
import polars as pl

from ..core.errors import InputError
from ..core.results.facets import has_facets, matching_rows, parse_filters
from ..core.results.reading import partitions, read_only, resolve
from ..core.results.search import Searcher, search_clusters, search_texts
from ..core.storage.store import Partition
from .output import (
    alias_option,
    count,
    emit_json,
    facet_option,
    json_option,
    note,
    run_config_option,
    show_table,
)

KINDS = ("clusters", "texts")


def _partitions(db: Path, dataset, run_config, within) -> list[Partition]:
    with read_only(db) as conn:
        if dataset is not None:
            return [resolve(conn, dataset, run_config)]
        listed = partitions(conn).filter(pl.col("finest_clusters").is_not_null())
    if run_config is not None:
        listed = listed.filter(pl.col("run_config") == run_config)
    if listed.height == 0:
        suffix = f" with run configuration {run_config!r}" if run_config else ""
        raise InputError(f"no clustered partition to search{suffix}")
    if within is not None and listed.height > 1:
        raise InputError("--within needs one partition: pass --dataset (and --run-config)")
    return [Partition(d, c) for d, c in listed.select("dataset", "run_config").iter_rows()]


def checked(text: str, what: str) -> str:
    """`text` if it is valid UTF-8 (a shell passes undecodable bytes on as surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        byte = text[err.start].encode("utf-8", "surrogateescape").hex()
        raise InputError(
            f"{what} is not UTF-8 text: byte 0x{byte} at character {err.start + 1}"
        ) from None
    return text


def _stdin_queries():
    """Each non-empty line of stdin, or an InputError for a line that is not UTF-8."""
    for number, raw in enumerate(sys.stdin.buffer, 1):
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError as err:
            yield InputError(
                f"stdin line {number} is not UTF-8 text (byte 0x{raw[err.start]:02x} at byte "
                f"{err.start + 1}): skipped"
            )
            continue
        if text:
            yield text


def _path(row: dict) -> list[dict]:
    """The `node_d`/`name_d` columns of a hit as a list, top level first."""
    depth = sum(1 for key in row if key.startswith("node_"))
    return [{"node_id": row[f"node_{d}"], "name": row[f"name_{d}"]} for d in range(depth)]


def answer(
    searcher: Searcher, parts, alias, query: str, kinds, limit: int, within, only=None
) -> dict:
    """The best `limit` clusters and/or texts over every partition, best first; `only`: per
    partition the row_idx texts may come from (facet filters)."""
    found = {kind: [] for kind in kinds}
    for part in parts:
        index = searcher.index(part, alias)
        if within is not None:
            index.tree.node(within)
        vector = searcher.embed(index, query)
        where = {"dataset": part.dataset, "run_config": part.run_config}
        if "clusters" in kinds:
            hits = search_clusters(index, vector, limit, within)
            found["clusters"] += [where | hit for hit in hits.to_dicts()]
        if "texts" in kinds:
            rows = None if only is None else only[part]
            for row in search_texts(index, vector, limit, within, rows).to_dicts():
                keep = {k: row[k] for k in ("row_idx", "text_id", "text", "score")}
                found["texts"].append(where | keep | {"clusters": _path(row)})
    return {"query": query} | {
        kind: sorted(hits, key=lambda h: -h["score"])[:limit] for kind, hits in found.items()
    }


def _show(result: dict, many: bool) -> None:
    where = [("partition", "partition")] if many else []
    for hit in result.get("clusters", []) + result.get("texts", []):
        hit["partition"] = f"{hit['dataset']}|{hit['run_config']}"
    if "clusters" in result:
        show_table(
            result["clusters"],
            [("score", "score>"), *where, ("node_id", "cluster"), ("size", "texts>"),
             ("name", "name"), ("matched_by", "matched by")],
            title=f"clusters nearest {result['query']!r}",
            wrap="name",
        )  # fmt: skip
    if "texts" in result:
        for hit in result["texts"]:
            leaf = hit["clusters"][-1] if hit["clusters"] else {"node_id": "", "name": ""}
            hit["cluster"] = f"{leaf['node_id']} {leaf['name']}"
        show_table(
            result["texts"],
            [("score", "score>"), *where, ("text", "text"), ("cluster", "cluster")],
            title=f"texts nearest {result['query']!r}",
            wrap="text",
        )


@click.command()
@click.argument("query")
@click.option("--dataset", "-d", default=None, help="Search one dataset (default: all).")
@run_config_option
@alias_option
@click.option("--clusters", "what", flag_value="clusters", help="Only clusters.")
@click.option("--texts", "what", flag_value="texts", help="Only texts.")
@click.option("--within", default=None, metavar="CLUSTER", help="Only inside this cluster.")
@click.option("--limit", "-n", default=10, show_default=True, type=count(1))
@facet_option
@json_option
@click.pass_obj
def search(
    db: Path, query, dataset, run_config, alias, what, within, limit, facet, as_json
) -> None:
    """Texts and clusters nearest in meaning to QUERY ('-': one query per line from stdin),
    embedded with each partition's own model."""
    parts = _partitions(db, dataset, run_config, within)
    filters = parse_filters(facet)
    only = None
    if filters:
        with read_only(db) as conn:
            if len(parts) > 1:  # over every partition: those with facets
                parts = [part for part in parts if has_facets(conn, part)] or parts[:1]
            only = {part: matching_rows(conn, part, filters) for part in parts}
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    searcher = Searcher(db)
    kinds = KINDS if what is None else (what,)
    queries = _stdin_queries() if query == "-" else [checked(query, "the query")]
    skipped = 0
    for text in queries:
        if isinstance(text, InputError):
            skipped += 1
            note(f"error: {text}")
            continue
        result = answer(searcher, parts, alias, text, kinds, limit, within, only)
        if as_json and query == "-":
            emit_json(result, lines=True)
        elif as_json:
            emit_json(result)
        else:
            _show(result, len(parts) > 1)
    if skipped:
        raise InputError(f"{skipped} line(s) of stdin were not UTF-8 and went unanswered")
