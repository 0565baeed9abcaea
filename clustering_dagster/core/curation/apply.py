"""People's edits applied over a machine-made tree: pure, the same for every reader.

Edits apply in the order they were made. One that no longer fits the tree (its cluster is gone
after a re-clustering, or a cluster it names is) changes nothing and gets the reason; the others
still apply. The privacy threshold's folded cluster is never edited and its texts never move.
"""

from dataclasses import dataclass

import numpy as np
import polars as pl

from ..storage.store import HIDDEN_ID
from .edits import Edit, person_node

# What a curated tree has beside the machine's columns.
CURATION_SCHEMA = {
    "named_by": pl.String,  # machine | person
    "placed_by": pl.String,  # machine | person (moved under another parent, or made by a split)
    "tags": pl.List(pl.String),
    "flag": pl.String,  # the note of a flag for review
    "edit_ids": pl.List(pl.Int64),  # the edits applied to it
}

MOVED_SCHEMA = {"row_idx": pl.Int32, "cluster_id": pl.Int32}


@dataclass(frozen=True)
class Curated:
    nodes: pl.DataFrame  # the tree's columns and CURATION_SCHEMA, depth-first, largest first
    moved: pl.DataFrame  # row_idx, cluster_id: texts whose finest cluster a person changed
    unapplied: dict[int, str]  # edit id -> why it no longer applies


class Unapplied(Exception):
    """An edit that does not fit the tree as it is now."""


def machine_tree(nodes: pl.DataFrame) -> pl.DataFrame:
    """The machine's tree with the curation columns of an unedited tree."""
    return nodes.with_columns(
        named_by=pl.lit("machine"),
        placed_by=pl.lit("machine"),
        tags=pl.lit([], pl.List(pl.String)),
        flag=pl.lit(None, pl.String),
        edit_ids=pl.lit([], pl.List(pl.Int64)),
    )


class _Tree:
    """The tree being edited: nodes by id, and the finest cluster of every text."""

    def __init__(self, nodes: pl.DataFrame, leaves: pl.DataFrame):
        unedited = machine_tree(nodes)
        self.schema = dict(unedited.schema)
        self.rows = {}
        for row in unedited.iter_rows(named=True):
            row["tags"], row["edit_ids"] = list(row["tags"]), list(row["edit_ids"])
            self.rows[row["node_id"]] = row
        self.finest = int(nodes["level"].max())
        self.row_idx = leaves["row_idx"].to_numpy()
        self.hashes = leaves["text_hash"].to_numpy()
        self.machine = leaves["cluster_id"].to_numpy().astype(np.int64)
        self.leaf = self.machine.copy()
        self.total = int(nodes.filter(pl.col("level") == 0)["size"].sum())

    def node(self, node_id: str) -> dict:
        if node_id not in self.rows:
            raise Unapplied(f"{node_id} is no longer in the tree")
        return self.rows[node_id]

    def below(self, node_id: str) -> set[str]:
        """The node and every node under it."""
        children: dict[str | None, list[str]] = {}
        for row in self.rows.values():
            children.setdefault(row["parent_id"], []).append(row["node_id"])
        found, frontier = set(), [node_id]
        while frontier:
            current = frontier.pop()
            found.add(current)
            frontier += children.get(current, [])
        return found

    def texts(self, hashes: tuple[str, ...]) -> np.ndarray:
        """Positions of the texts with these hashes that are clustered outside the folded node."""
        chosen = np.isin(self.hashes, np.asarray(hashes, dtype=self.hashes.dtype))
        return np.flatnonzero(chosen & (self.leaf != HIDDEN_ID))

    def finish(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        """The nodes with sizes, shares, child counts and depth-first positions recomputed."""
        ids, counts = np.unique(self.leaf, return_counts=True)
        now = dict(zip(ids.tolist(), counts.tolist(), strict=True))
        ids, counts = np.unique(self.machine, return_counts=True)
        before = dict(zip(ids.tolist(), counts.tolist(), strict=True))
        children: dict[str | None, list[dict]] = {}
        for row in self.rows.values():
            children.setdefault(row["parent_id"], []).append(row)
            if row["level"] == self.finest:
                cluster = row["cluster_id"]
                row["size"] += now.get(cluster, 0) - before.get(cluster, 0)

        def size(row: dict) -> int:
            kids = children.get(row["node_id"], [])
            if row["level"] != self.finest:
                row["size"] = sum(size(kid) for kid in kids) if kids else 0
            row["n_children"] = len(kids)
            row["share"] = row["size"] / self.total if self.total else 0.0
            return row["size"]

        roots = children.get(None, [])
        for root in roots:
            size(root)
        ordered = []

        def visit(row: dict) -> None:
            row["position"] = len(ordered)
            ordered.append(row)
            for kid in sorted(children.get(row["node_id"], []), key=_order):
                visit(kid)

        for root in sorted(roots, key=_order):
            visit(root)
        nodes = pl.DataFrame(ordered, schema=self.schema)
        changed = self.leaf != self.machine
        moved = pl.DataFrame(
            {"row_idx": self.row_idx[changed], "cluster_id": self.leaf[changed]},
            schema=MOVED_SCHEMA,
        )
        return nodes, moved


def _order(row: dict) -> tuple:
    return (-row["size"], row["position"], row["node_id"])


def apply_edits(nodes: pl.DataFrame, leaves: pl.DataFrame, edits: list[Edit]) -> Curated:
    """`edits` (in force, in order) over the machine's tree `nodes` (the tree's columns; depth
    first) whose texts are `leaves` (row_idx, text_hash, cluster_id at the finest level)."""
    tree = _Tree(nodes, leaves)
    unapplied = {}
    for edit in edits:
        try:
            APPLY[edit.kind](tree, edit)
        except Unapplied as why:
            unapplied[edit.edit_id] = str(why)
    done, moved = tree.finish()
    return Curated(done, moved, unapplied)


def _mark(node: dict, edit: Edit) -> None:
    node["edit_ids"].append(edit.edit_id)


def _rename(tree: _Tree, edit: Edit) -> None:
    node = tree.node(edit.node_id)
    node["name"] = edit.value["name"]
    if edit.value.get("summary"):
        node["summary"] = edit.value["summary"]
    node["named_by"] = "person"
    _mark(node, edit)


def _tag(tree: _Tree, edit: Edit) -> None:
    node = tree.node(edit.node_id)
    if edit.value["tag"] not in node["tags"]:
        node["tags"].append(edit.value["tag"])
    _mark(node, edit)


def _flag(tree: _Tree, edit: Edit) -> None:
    node = tree.node(edit.node_id)
    node["flag"] = edit.value["note"]
    _mark(node, edit)


def _merge(tree: _Tree, edit: Edit) -> None:
    node = tree.node(edit.node_id)
    others = [tree.node(f"{level}/{cluster}") for level, cluster in edit.value["others"]]
    for other in others:
        if other["level"] != node["level"]:
            raise Unapplied(f"{other['node_id']} is not at the level of {node['node_id']}")
    for other in others:
        for row in tree.rows.values():
            if row["parent_id"] == other["node_id"]:
                row["parent_id"] = node["node_id"]
        if other["level"] == tree.finest:
            tree.leaf[tree.leaf == other["cluster_id"]] = node["cluster_id"]
        del tree.rows[other["node_id"]]
    _mark(node, edit)


def _move(tree: _Tree, edit: Edit) -> None:
    node = tree.node(edit.node_id)
    parent = tree.node("{}/{}".format(*edit.value["parent"]))
    if parent["node_id"] in tree.below(node["node_id"]):
        raise Unapplied(f"moving {node['node_id']} under {parent['node_id']} makes a cycle")
    if parent["level"] != node["level"] - 1:
        raise Unapplied(f"{parent['node_id']} is not one level above {node['node_id']}")
    node["parent_id"] = parent["node_id"]
    node["placed_by"] = "person"
    _mark(node, edit)


def _move_texts(tree: _Tree, edit: Edit) -> None:
    node = tree.node(edit.node_id)
    chosen = tree.texts(edit.texts)
    if chosen.size == 0:
        raise Unapplied("none of its texts is in the partition any more")
    tree.leaf[chosen] = node["cluster_id"]
    _mark(node, edit)


def _split(tree: _Tree, edit: Edit) -> None:
    source = tree.node(edit.node_id)
    chosen = tree.texts(edit.texts)
    if chosen.size == 0:
        raise Unapplied("none of its texts is in the partition any more")
    node_id, cluster = person_node(source["level_name"], edit.edit_id)
    tree.rows[node_id] = source | {
        "node_id": node_id,
        "cluster_id": cluster,
        "size": 0,
        "name": edit.value["name"],
        "summary": "",
        "keywords": [],
        "method": "person",
        "named_by": "person",
        "placed_by": "person",
        "tags": [],
        "flag": None,
        "edit_ids": [edit.edit_id],
        "position": source["position"],
    }
    tree.leaf[chosen] = cluster


APPLY = {
    "rename": _rename,
    "tag": _tag,
    "flag": _flag,
    "merge": _merge,
    "move": _move,
    "move_texts": _move_texts,
    "split": _split,
}
