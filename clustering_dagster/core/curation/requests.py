"""A person's edit, checked against the partition's tree as it is now and recorded in one short
transaction (with the curated state rewritten), or refused in one line that changes nothing."""

import json
import unicodedata
from dataclasses import dataclass, field

import polars as pl

from ..config.run_config import PrivacyConfig
from ..errors import InputError
from ..results.reading import KEYWORD_NAMES, NamedTree, leaf_assignments, load_tree
from ..storage.lake import claim
from ..storage.store import (
    HIDDEN_ID,
    SCHEMA,
    Partition,
    in_transaction,
    registered,
    shown_relation,
)
from ..storage.store import visible_version as published
from .edits import KINDS, Edit
from .records import next_edit_id, now, read_edits, write_edit
from .refresh import refresh

MAX_NAME = 200
MAX_TAG = 60
MAX_NOTE = 2000


@dataclass(frozen=True)
class EditRequest:
    kind: str
    node_id: str | None = None  # the target (None for undo)
    value: dict = field(default_factory=dict)  # as in edits.KINDS, with node ids as strings
    text_ids: tuple[str, ...] = ()  # move_texts, split
    author: str = "unknown"
    note: str | None = None


@dataclass(frozen=True)
class Made:
    edit: Edit
    tree: NamedTree  # the partition's tree (keyword names) with the edit applied


def make_edit(conn, part: Partition, request: EditRequest) -> Made:
    """Check `request` against the partition's published tree with the edits in force, record
    it and rewrite the curated state, in one transaction on the read-write `conn` (run again
    whole if it conflicts with another writer's)."""
    if request.kind not in KINDS:
        raise InputError(f"no edit kind {request.kind!r} (kinds: {', '.join(KINDS)})")

    def write() -> Made:
        claim(conn)  # the next edit id: of two edits at once in the lake, the later runs again
        version = published(conn, "hierarchy", part)
        if version is None:
            raise InputError(f"{part} has no published tree to edit: cluster it first")
        tree = load_tree(conn, part, KEYWORD_NAMES)
        edit_id = next_edit_id(conn)
        value, level_name, cluster_id, moved, members = CHECK[request.kind](
            conn, tree, request, edit_id
        )
        edit = Edit(
            edit_id=edit_id,
            kind=request.kind,
            level_name=level_name,
            cluster_id=cluster_id,
            value=value,
            author=_one_line(request.author, "author", MAX_NAME),
            note=None if not request.note else _one_line(request.note, "note", MAX_NOTE),
            made_at=now(),
            made_on=version,
            texts=tuple(moved.to_list()) if moved is not None else (),
        )
        write_edit(conn, part, edit, moved, members)
        status = refresh(conn, part)
        mine = status.filter(pl.col("edit_id") == edit_id)
        if mine["status"][0] == "needs_attention":  # the checks above should never let one by
            raise InputError(f"the edit does not apply: {mine['reason'][0]}")
        return Made(edit, load_tree(conn, part, KEYWORD_NAMES))

    return in_transaction(conn, write)


# --- the checks, per kind: (value, level_name, cluster_id, moved hashes, member hashes) --------


def _one_line(text: str, what: str, limit: int) -> str:
    text = " ".join(str(text).split())
    if not text:
        raise InputError(f"the {what} is empty")
    if any(unicodedata.category(char) in ("Cc", "Cf") for char in text):
        raise InputError(f"the {what} holds a control or format character: type plain text")
    if len(text) > limit:
        raise InputError(f"the {what} has {len(text)} characters; at most {limit}")
    return text


def _node(tree: NamedTree, node_id: str | None) -> dict:
    """A node people may edit: one of the clustering levels' clusters, not the folded one."""
    if not isinstance(node_id, str) or not node_id:
        raise InputError("name a cluster, e.g. fine/12")
    level = node_id.split("/", 1)[0]
    if level not in tree.level_names():
        raise InputError(
            f"{node_id!r} is not a cluster of the clustering levels ({', '.join(tree.level_names())}"
            "): an LLM alias's parents are made anew by every run, so edit the clusters they group"
        )
    node = tree.node(node_id)
    if node["cluster_id"] == HIDDEN_ID:
        raise InputError(
            f"{node_id} is the privacy threshold's folded node: it holds clusters too small to "
            "show, and no edit may open it"
        )
    return node


def _under(tree: NamedTree, node_id: str) -> set[str]:
    """The node and every node below it."""
    depth = tree.node(node_id)["level"]
    chains = tree.leaf_chains()
    below = [
        f"node_{d}" for d in range(depth + 1, len(tree.level_names())) if f"node_{d}" in chains
    ]
    inside = chains.filter(pl.col(f"node_{depth}") == node_id).select(below)
    return set(inside.unpivot()["value"].drop_nulls()) | {node_id} if below else {node_id}


def _members(conn, tree: NamedTree, node_ids: list[str]) -> pl.Series:
    ids = sorted({c for node_id in node_ids for c in tree.leaves(node_id)})
    return conn.execute(
        f"SELECT DISTINCT text_hash FROM {leaf_assignments(conn, tree)} "
        "WHERE list_contains(?, cluster_id)",
        [ids],
    ).pl()["text_hash"]


def _texts(conn, tree: NamedTree, text_ids: tuple[str, ...]) -> pl.DataFrame:
    """The texts a person named by id (text_id, text_hash, cluster_id at the finest level)."""
    if not text_ids:
        raise InputError("name at least one text by its id (as `texts` lists them)")
    asked = pl.DataFrame({"text_id": list(dict.fromkeys(text_ids))})
    with registered(conn, "_asked", asked):
        found = conn.execute(
            f"SELECT t.text_id, t.text_hash, a.cluster_id "
            f"FROM {shown_relation(conn, 'texts', tree.part)} t "
            f"JOIN {leaf_assignments(conn, tree)} a USING (row_idx) "
            "SEMI JOIN _asked USING (text_id)"
        ).pl()
    missing = [t for t in asked["text_id"] if t not in set(found["text_id"])]
    if missing:
        shown = ", ".join(repr(t) for t in missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise InputError(f"no text with id {shown} in {tree.part} (ids as `texts` lists them)")
    if (found["cluster_id"] == HIDDEN_ID).any():
        raise InputError("a text in the privacy threshold's folded node cannot be moved")
    return found


def _finest(tree: NamedTree, node: dict, what: str) -> None:
    if node["level_name"] != tree.leaf_level:
        raise InputError(
            f"{what} works on clusters of the finest level ({tree.leaf_level}); "
            f"{node['node_id']} is a {node['level_name']} cluster"
        )


def _simple(kind_value):
    def check(conn, tree, request, _):
        node = _node(tree, request.node_id)
        value = kind_value(request.value)
        return (
            value,
            node["level_name"],
            node["cluster_id"],
            None,
            _members(conn, tree, [node["node_id"]]),
        )

    return check


_rename = _simple(
    lambda v: (
        {"name": _one_line(v.get("name", ""), "name", MAX_NAME)}
        | ({"summary": _one_line(v["summary"], "summary", MAX_NOTE)} if v.get("summary") else {})
    )
)
_tag = _simple(lambda v: {"tag": _one_line(v.get("tag", ""), "tag", MAX_TAG)})
_flag = _simple(lambda v: {"note": _one_line(v.get("note", ""), "note of the flag", MAX_NOTE)})


def _merge(conn, tree, request, _):
    node = _node(tree, request.node_id)
    others = [_node(tree, other) for other in dict.fromkeys(request.value.get("others", []))]
    if not others:
        raise InputError(f"name the clusters to merge into {node['node_id']}")
    for other in others:
        if other["node_id"] == node["node_id"]:
            raise InputError(f"{node['node_id']} cannot be merged into itself")
        if other["level"] != node["level"]:
            raise InputError(
                f"merge joins clusters of one level: {other['node_id']} is {other['level_name']}, "
                f"{node['node_id']} is {node['level_name']}"
            )
    value = {"others": [[o["level_name"], o["cluster_id"]] for o in others]}
    named = [node["node_id"]] + [o["node_id"] for o in others]
    return value, node["level_name"], node["cluster_id"], None, _members(conn, tree, named)


def _move(conn, tree, request, _):
    node = _node(tree, request.node_id)
    parent = _node(tree, request.value.get("parent"))
    if parent["node_id"] in _under(tree, node["node_id"]):
        raise InputError(
            f"moving {node['node_id']} under {parent['node_id']} would make a cycle: "
            f"{parent['node_id']} is {node['node_id']} or inside it"
        )
    if node["level"] == 0:
        raise InputError(f"{node['node_id']} is at the top level: it has no parent to change")
    if parent["level"] != node["level"] - 1:
        above = tree.level_names()[node["level"] - 1]
        raise InputError(
            f"a {node['level_name']} cluster sits under a {above} cluster; "
            f"{parent['node_id']} is {parent['level_name']}"
        )
    if node["parent_id"] == parent["node_id"]:
        raise InputError(f"{node['node_id']} is already under {parent['node_id']}")
    value = {"parent": [parent["level_name"], parent["cluster_id"]]}
    members = _members(conn, tree, [node["node_id"]])
    return value, node["level_name"], node["cluster_id"], None, members


def _no_threshold(conn, part: Partition, what: str) -> None:
    """Texts chosen one by one may not make clusters of a partition under a privacy threshold:
    a cluster of a few picked conversations would show what the threshold hides."""
    logged = conn.execute(
        f"SELECT params->'privacy' FROM {SCHEMA}.materializations WHERE dataset = ? "
        "AND run_config = ? AND asset = 'cluster_levels' ORDER BY materialized_at DESC LIMIT 1",
        [part.dataset, part.run_config],
    ).fetchone()
    privacy = PrivacyConfig(**json.loads(logged[0])) if logged and logged[0] else PrivacyConfig()
    if privacy.threshold:
        raise InputError(
            f"{what} is off under a privacy threshold ({part.run_config} folds clusters below "
            f"{privacy.min_conversations} conversations): merge or move clusters instead"
        )


def _move_texts(conn, tree, request, _):
    _no_threshold(conn, tree.part, "move-texts")
    node = _node(tree, request.node_id)
    _finest(tree, node, "move-texts")
    texts = _texts(conn, tree, request.text_ids)
    return {}, node["level_name"], node["cluster_id"], texts["text_hash"], None


def _split(conn, tree, request, _):
    _no_threshold(conn, tree.part, "split")
    node = _node(tree, request.node_id)
    _finest(tree, node, "split")
    name = _one_line(request.value.get("name", ""), "name of the new cluster", MAX_NAME)
    texts = _texts(conn, tree, request.text_ids)
    outside = texts.filter(pl.col("cluster_id") != node["cluster_id"])
    if outside.height:
        text_id, cluster = outside.row(0)[0], outside.row(0)[2]
        raise InputError(
            f"text {text_id!r} is not in {node['node_id']} (it is in "
            f"{tree.leaf_level}/{cluster}): a split takes texts out of one cluster"
        )
    inside = _members(conn, tree, [node["node_id"]])
    if texts["text_hash"].n_unique() >= inside.len():
        raise InputError(
            f"those are all of {node['node_id']}'s texts: a split must leave some (rename it?)"
        )
    return {"name": name}, node["level_name"], node["cluster_id"], texts["text_hash"], inside


def _undo(conn, tree, request, _):
    target = request.value.get("edit")
    edits = {e.edit_id: e for e in read_edits(conn, tree.part)}
    if not isinstance(target, int) or target not in edits:
        raise InputError(f"no edit {target} of {tree.part} (`curate history` lists them)")
    if edits[target].kind == "undo":
        raise InputError(f"edit {target} is an undo: make the edit it undid again instead")
    if any(e.kind == "undo" and e.value["edit"] == target for e in edits.values()):
        raise InputError(f"edit {target} is already undone")
    done = edits[target]
    return {"edit": target}, done.level_name, done.cluster_id, None, None


CHECK = {
    "rename": _rename,
    "merge": _merge,
    "move": _move,
    "move_texts": _move_texts,
    "split": _split,
    "tag": _tag,
    "flag": _flag,
    "undo": _undo,
}
