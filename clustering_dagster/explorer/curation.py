"""People's edits in the explorer: what the cluster and changes pages show of them (a node's
edit history, the edits needing attention, what the edit forms offer) and how a POSTed edit is
taken: only from the explorer's own pages (`same_site`), as a form or JSON, saved by
`core.curation.requests.make_edit` on a short read-write connection while the reads wait."""

import json
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import polars as pl
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ..commands.curate import writing
from ..core.curation.edits import edit_dict, person_node
from ..core.curation.requests import EditRequest, Made, make_edit
from ..core.errors import InputError
from ..core.results.reading import KEYWORD_NAMES, NamedTree, load_tree, resolve
from ..core.storage.store import HIDDEN_ID, Partition
from .reads import HOSTS, Failure, cluster_url, gate, part_url
from .render import error_answer

MAX_BODY = 1_000_000  # bytes of a POSTed edit
MAX_FIELDS = 10_000


# --- what the pages show -------------------------------------------------------------------------


def node_edits(rows: list[dict], node_id: str) -> list[dict]:
    """The edits naming the node and the undos of those, each with whether it may be undone."""
    naming = {row["edit_id"] for row in rows if node_id in row["nodes"]}
    return [
        row | {"undoable": row["kind"] != "undo" and row["undone_by"] is None}
        for row in rows
        if row["edit_id"] in naming or row["value"].get("edit") in naming
    ]


def attention(rows: list[dict], tree: NamedTree, names: str | None) -> list[dict]:
    """The edits that no longer apply, each with the clusters holding its texts now (their
    name in `tree`, and a link to those still in it)."""
    now = dict(zip(tree.nodes["node_id"], tree.nodes["name"], strict=True))
    return [
        row
        | {
            "holders": [
                holder
                | {
                    "name": now.get(holder["node_id"]) or holder["name"] or "",
                    "url": cluster_url(tree.part, holder["node_id"], names=names)
                    if holder["node_id"] in now
                    else None,
                }
                for holder in row["holders"]
            ]
        }
        for row in rows
        if row["status"] == "needs_attention"
    ]


def edit_options(conn, tree: NamedTree, node_id: str) -> dict | None:
    """What the cluster page's forms offer for the node: the other clusters of its level (to
    merge, or to move texts to), the clusters one level up (to move it under), whether it is of
    the finest level; None when no one may edit it (the folded node, an LLM alias's parents)."""
    keyed = tree if tree.names == KEYWORD_NAMES else load_tree(conn, tree.part, KEYWORD_NAMES)
    nodes = keyed.nodes.filter(pl.col("cluster_id") != HIDDEN_ID)
    here = nodes.filter(pl.col("node_id") == node_id)
    if here.height == 0:
        return None
    node = here.row(0, named=True)
    shown = dict(zip(tree.nodes["node_id"], tree.nodes["name"], strict=True))

    def listed(chosen: pl.Expr) -> list[dict]:
        return [
            {"node_id": other, "name": shown.get(other) or name or "", "size": size}
            for other, name, size in nodes.filter(chosen).select("node_id", "name", "size").rows()
        ]

    level = pl.col("level")
    return {
        "peers": listed((level == node["level"]) & (pl.col("node_id") != node_id)),
        "parents": listed(
            (level == node["level"] - 1) & pl.col("node_id").ne_missing(node["parent_id"])
        ),
        "finest": node["level_name"] == keyed.leaf_level,
    }


def edit_url(part: Partition, node_id: str | None, **query) -> str:
    """Where a page's edit forms POST: the cluster's `/edit` (or the partition's, for an undo
    from the changes page)."""
    suffix = "/edit" if node_id is None else f"/c/{quote(node_id, safe='/')}/edit"
    return part_url(part, suffix, **query)


# --- taking an edit ------------------------------------------------------------------------------


def same_site(request: Request) -> None:
    """Refuse (403) a POST another site may have sent: its Origin must be this server's address
    (by 127.0.0.1 or localhost); a request without one must have such a Referer."""
    sent = urlsplit(request.headers.get("origin") or request.headers.get("referer") or "")
    try:
        if sent.scheme == "http" and sent.hostname in HOSTS and sent.port == request.url.port:
            return
    except ValueError:  # not a port
        pass
    raise Failure(403, "an edit is taken only from the explorer's own pages (Origin or Referer)")


async def posted(request: Request, handler, as_json: bool) -> Response:
    """`handler(request, body)` in the thread pool, for a same-site POST of at most MAX_BODY
    bytes; else the failure."""
    try:
        same_site(request)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise Failure(413, f"an edit has at most {MAX_BODY:,} bytes")
    except Failure as err:
        return error_answer(request, err, as_json)
    return await run_in_threadpool(handler, request, bytes(body))


def _content(request: Request, body: bytes, wanted: str) -> str:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != wanted:
        raise Failure(415, f"an edit is sent as {wanted}, not {kind or 'nothing'}")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise Failure(400, "the edit is not UTF-8") from None


ONE_FIELD = {"tag": ("tag",), "flag": ("note",), "move": ("parent",), "split": ("name",)}


def form_request(request: Request, body: bytes, node_id: str | None, author: str) -> EditRequest:
    """The edit a cluster page's form sends: `kind` and its fields (name, summary, tag, note,
    others, parent, to, texts, edit); the node is the page's (for move_texts: `to`)."""
    try:
        fields = parse_qs(
            _content(request, body, "application/x-www-form-urlencoded"),
            keep_blank_values=True,
            max_num_fields=MAX_FIELDS,
        )
    except ValueError:
        raise Failure(400, f"an edit has at most {MAX_FIELDS:,} fields") from None

    def one(key: str) -> str:
        return (fields.get(key) or [""])[-1].strip()

    kind = one("kind")
    if kind == "rename":
        value = {"name": one("name")} | ({"summary": one("summary")} if one("summary") else {})
    elif kind == "merge":
        value = {
            "others": [o for v in fields.get("others", []) for o in v.replace(",", " ").split()]
        }
    elif kind == "undo":
        value = {"edit": _edit_number(one("edit"))}
    else:  # tag, flag (note), move (parent), split (name): one field as the value holds it
        value = {key: one(key) for key in ONE_FIELD.get(kind, ())}
    target = one("to") if kind == "move_texts" else None if kind == "undo" else node_id
    texts = tuple(fields.get("texts", ())) if kind in ("move_texts", "split") else ()
    return EditRequest(kind, target, value, texts, author)


def _edit_number(raw: str) -> int:
    if not raw.isdigit():
        raise Failure(400, f"name the edit to undo by its number, not {raw!r}")
    return int(raw)


SHAPES = {"name": str, "summary": str, "tag": str, "note": str, "parent": str, "edit": int}


def json_request(request: Request, body: bytes, author: str) -> EditRequest:
    """The edit a script sends as JSON: {kind, node_id, value, text_ids, note} as
    `EditRequest` takes them (node ids as strings)."""
    try:
        sent = json.loads(_content(request, body, "application/json"))
    except ValueError:
        raise Failure(400, "the edit is not JSON") from None
    if not isinstance(sent, dict):
        raise Failure(400, "an edit is a JSON object: {kind, node_id, value, text_ids, note}")
    value, text_ids = sent.get("value") or {}, sent.get("text_ids") or []
    shaped = (
        isinstance(value, dict)
        and all(isinstance(value[k], t) for k, t in SHAPES.items() if k in value)
        and _strings(value.get("others", []))
        and _strings(text_ids)
        and all(isinstance(sent.get(k), str | None) for k in ("kind", "node_id", "note"))
    )
    if not shaped:
        raise Failure(
            400, "an edit's kind, node_id, note and node ids are strings, value.edit a number"
        )
    return EditRequest(
        sent.get("kind") or "",
        sent.get("node_id"),
        value,
        tuple(text_ids),
        author,
        sent.get("note"),
    )


def _strings(values) -> bool:
    return isinstance(values, list) and all(isinstance(v, str) for v in values)


def save(database: Path, dataset: str, run_config: str, request: EditRequest):
    """The partition and the edit made (`Made`) on a short read-write connection, while this
    process's reads wait; an edit `make_edit` refuses is 400 with its line (nothing changed)."""
    with gate(Path(database)).writing(), writing(database) as conn:
        part = resolve(conn, dataset, run_config)
        try:
            return part, make_edit(conn, part, request)
        except InputError as err:
            raise Failure(400, str(err)) from None


def landing(made: Made, page_node: str | None) -> str | None:
    """The node to show after an edit: a split's new cluster, else the page's node, else the
    edit's own; None when none of them is in the tree now."""
    edit, now = made.edit, set(made.tree.nodes["node_id"])
    wanted = [person_node(edit.level_name, edit.edit_id)[0]] if edit.kind == "split" else []
    return next((n for n in [*wanted, page_node, edit.node_id] if n in now), None)


def edit_view(part: Partition, made: Made, names: str | None) -> dict:
    """An edit made, as the JSON endpoint answers it (`url`: the cluster to look at now)."""
    shown = landing(made, None)
    return edit_dict(part, made.edit) | {
        "url": None if shown is None else cluster_url(part, shown, names=names)
    }
