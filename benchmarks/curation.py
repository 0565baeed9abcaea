"""People's edits of a tree (`clustering-dagster curate`), made on a clustered partition of
Banking77 and carried over a re-clustering with 10% more texts.

The partition: 3,000 distinct Banking77 queries (train and test, duplicates dropped, shuffled with
seed 0; ids `b77:<n>`, the row in train then test) written as a parquet dataset (id, text,
category) and clustered by the real pipeline (`raw_texts` through `cluster_hierarchy`, the
shipped `default` run configuration) into a fresh `benchmarks/out/curation.duckdb`.

The edits: rounds of one edit of every kind (rename, tag, flag, merge, move, move_texts, split,
undo), each through `make_edit` on one read-write connection, its targets chosen from the tree
as it stands (with the edits so far) by size rank, on clusters no earlier edit touched while any
are left (then a name, tag or flag goes on a cluster only those named): rename, tag and flag
cycle through the levels (the largest cluster of the level); merge joins the two smallest
siblings of a parent (at the finest level, every third round one level up); move puts the
largest cluster of the finest level (every other round one of the level above) under another
cluster one level up (the n-th largest other one, n the round); move_texts takes the first 3
texts (by row) of the largest finest cluster into the next largest; split takes 4 texts out of
the largest into a new cluster; undo undoes the earliest edit of the next kind in turn.
`edit_ms` is the median of the `make_edit` calls (p90 and max printed); after each the tree is
read back (`load_tree`, the texts' finest clusters as people left them) and the edit's effect
checked: the name, tag or flag on its node, the merged clusters gone and their sizes summed, the
new parent, the moved texts in their new cluster, the split's new cluster holding exactly its
texts, an undone edit's effect gone. Then a few edits through the CLI as a user makes them
(`clustering-dagster --db FILE curate rename|tag|move-texts|undo`, each in a fresh process: its
wall time is mostly start-up, printed, not a bar), and `curate history` / `attention`.
`tree_ms`: a read-only connection opened and `load_tree` of the curated tree (median of several
reads); `tree --json`'s wall time beside it.

Then 10% more texts (other Banking77 queries, not in the partition) are appended and the
partition re-clustered by the real pipeline; its publication applies the edits again. Each edit
is classified from its status against the new published version (`clustering.edit_status`,
column `version`): carried (applied; undone for an undone edit), needs_attention, or lost (no
status, or a status the reader's view contradicts). Carried is checked in the tree a reader
gets (`read_only` + `load_tree`, `clustering.curated_assignments`): a carried rename's name on
its node, a carried move's parent, a carried merge's other clusters absent and none of their
texts left in them, carried text moves' and splits' texts in their cluster, tags and flags on
their nodes, an undone edit in no node's `edit_ids`; an edit needing attention must be in none
either. `curate history` (the latest status) must agree, and `curate attention --json` list
exactly the edits needing attention. Anything else that went wrong (an edit refused or not seen
applied, a disagreement) is printed as FAILED and counted in `failures`.

The last line is one JSON object: edits, carried, needs_attention, lost, edit_ms, tree_ms, per
kind counts, the CLI times, seconds and the machine. Bars (issue): lost == 0, carried +
needs_attention == edits, edit_ms <= 200, tree_ms <= 500; printed met / unmet.

Usage, from the repository root: python -m benchmarks.curation [--smoke]
(--smoke: 400 texts and 40 appended, 2 rounds (16 edits) and the CLI's 4, in a temporary folder;
about a minute)
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks.common import LABELLED, OUT, cluster_tree, machine, write_texts

CLI = Path(sys.executable).parent / "clustering-dagster"
RUN_CONFIG = "default"
NEW_SHARE = 0.10  # texts appended before the re-clustering, of the partition's texts
ROUND = ["rename", "tag", "flag", "merge", "move", "move_texts", "split", "undo"]
UNDONE_IN_TURN = ["rename", "tag", "flag", "merge", "move", "move_texts", "split"]
KINDS = ROUND
MOVED_TEXTS = 3  # texts per move_texts
SPLIT_TEXTS = 4  # texts per split
BARS = {  # figure -> (what must hold, as printed)
    "lost": (lambda f: f["lost"] == 0, "== 0"),
    "carried + needs_attention": (
        lambda f: f["carried"] + f["needs_attention"] == f["edits"],
        "== edits",
    ),
    "edit_ms": (lambda f: f["edit_ms"] is not None and f["edit_ms"] <= 200, "<= 200"),
    "tree_ms": (lambda f: f["tree_ms"] is not None and f["tree_ms"] <= 500, "<= 500"),
}


@dataclass(frozen=True)
class Size:
    texts: int
    rounds: int
    reads: int  # tree reads timed


FULL = Size(3_000, 8, 15)
SMOKE = Size(400, 2, 5)


@dataclass
class Record:
    """An edit made, what it should look like in the tree, and what became of it."""

    edit_id: int
    kind: str
    node_id: str | None
    value: dict
    text_ids: tuple[str, ...] = ()
    via: str = "api"  # api | cli
    ms: float | None = None
    expect: dict = field(default_factory=dict)  # what was there before, for the checks
    undone_by: int | None = None
    before: str | None = None  # status against the version it was made on
    after: str | None = None  # status against the re-clustered version
    reason: str | None = None
    holders: list | None = None
    verdict: str | None = None  # carried | needs_attention | lost
    why_lost: str | None = None


# --- the data and the pipeline -----------------------------------------------------------------


def queries() -> pl.DataFrame:
    """Banking77's distinct queries (id, text, category), shuffled with seed 0."""
    source = LABELLED["banking77"][0]
    frame = pl.concat(pl.read_csv(source / name) for name in ("train.csv", "test.csv"))
    frame = frame.with_row_index("n").select(
        id=pl.format("b77:{}", pl.col("n")), text=pl.col("text"), category=pl.col("category")
    )
    frame = frame.unique("text", keep="first", maintain_order=True)
    return frame.sample(fraction=1.0, shuffle=True, seed=0)


def cli(database: Path, *args: str) -> tuple[object, float]:
    """`clustering-dagster --db DATABASE ARGS --json` in its own process: its JSON, wall seconds."""
    began = time.perf_counter()
    done = subprocess.run(
        [str(CLI), "--db", str(database), *args, "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ | {"HF_HUB_OFFLINE": "1", "CLUSTERING_AUTHOR": "benchmark-cli"},
    )
    seconds = time.perf_counter() - began
    if done.returncode:
        raise RuntimeError(f"clustering-dagster {' '.join(args)}: {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout), seconds


# --- the tree as a reader sees it --------------------------------------------------------------


@dataclass
class View:
    """The curated tree (`load_tree`) and each text's finest cluster as people left it."""

    nodes: dict[str, dict]
    leaf_level: str
    levels: list[str]
    cluster_of: dict[str, int]  # text_id -> finest cluster id
    rows: pl.DataFrame  # text_id, row_idx, cluster_id

    def node(self, node_id: str) -> dict | None:
        return self.nodes.get(node_id)

    def holding(self, edit_id: int) -> list[str]:
        return [n for n, row in self.nodes.items() if edit_id in row["edit_ids"]]


def view_of(conn, part) -> View:
    """The tree a reader gets on `conn`, and the texts' finest clusters from
    `clustering.curated_assignments` (checked against the tree's `moved`)."""
    from clustering_dagster.core.results.reading import KEYWORD_NAMES, load_tree

    tree = load_tree(conn, part, KEYWORD_NAMES)
    leaf = tree.leaf_level
    rows = conn.execute(
        "SELECT t.text_id, c.row_idx, c.cluster_id, c.moved_by_person "
        "FROM clustering.curated_assignments c JOIN clustering.texts t "
        "USING (dataset, run_config, row_idx) "
        "WHERE c.dataset = ? AND c.run_config = ? AND c.level_name = ? ORDER BY c.row_idx",
        [part.dataset, part.run_config, leaf],
    ).pl()
    moved = rows.filter(pl.col("moved_by_person")).select("row_idx", "cluster_id")
    expected = tree.moved.select("row_idx", "cluster_id").sort("row_idx")
    if not moved.cast(expected.schema).equals(expected):
        raise AssertionError("curated_assignments disagrees with the tree's moved texts")
    nodes = {}
    for row in tree.nodes.iter_rows(named=True):
        row["tags"], row["edit_ids"] = list(row["tags"]), list(row["edit_ids"])
        nodes[row["node_id"]] = row
    return View(
        nodes=nodes,
        leaf_level=leaf,
        levels=tree.level_names(),
        cluster_of=dict(zip(rows["text_id"], rows["cluster_id"], strict=True)),
        rows=rows.select("text_id", "row_idx", "cluster_id"),
    )


def tree_nodes(view: View, level: str, exclude: set[str]) -> list[dict]:
    """Editable clusters of a level (machine-made, not folded, not yet edited), largest first."""
    from clustering_dagster.core.storage.store import HIDDEN_ID

    found = [
        n
        for n in view.nodes.values()
        if n["level_name"] == level
        and n["cluster_id"] != HIDDEN_ID
        and n["method"] != "person"
        and n["size"] > 0
        and n["node_id"] not in exclude
    ]
    return sorted(found, key=lambda n: (-n["size"], n["node_id"]))


# --- the script ----------------------------------------------------------------------------------


class Script:
    """Chooses each edit from the tree as it stands; keeps clear of clusters edited before."""

    def __init__(self):
        self.used: set[str] = set()  # clusters an edit targets or names
        self.structural: set[str] = set()  # of those, the ones a merge, move or split names
        self.texts: set[str] = set()  # texts an edit moved
        self.records: list[Record] = []

    def plan(self, kind: str, turn: int, view: View) -> tuple[dict, dict] | None:
        """The request's fields (node_id, value, text_ids) and what the checks need, or None
        when the tree has nothing left to edit this way."""
        return getattr(self, "_" + kind)(turn, view)

    def _annotate(self, turn: int, view: View, shift: int) -> dict | None:
        level = view.levels[(turn + shift) % len(view.levels)]
        choice = tree_nodes(view, level, self.used) or tree_nodes(view, view.leaf_level, self.used)
        # every cluster edited once: another name, tag or flag on one no structural edit names
        choice = choice or tree_nodes(view, level, self.structural)
        return choice[0] if choice else None

    def claim(self, *node_ids: str) -> None:
        self.used |= set(node_ids)
        self.structural |= set(node_ids)

    def _rename(self, turn, view):
        node = self._annotate(turn, view, 0)
        if node is None:
            return None
        name = f"Curated {turn}: {(node['name'] or '')[:40]}".strip()
        self.used.add(node["node_id"])
        return {"node_id": node["node_id"], "value": {"name": name}}, {"was": node["name"]}

    def _tag(self, turn, view):
        node = self._annotate(turn, view, 1)
        if node is None:
            return None
        self.used.add(node["node_id"])
        return {"node_id": node["node_id"], "value": {"tag": f"reviewed-{turn}"}}, {}

    def _flag(self, turn, view):
        node = self._annotate(turn, view, 2)
        if node is None:
            return None
        self.used.add(node["node_id"])
        note = f"check {turn}: mixes two intents?"
        return {"node_id": node["node_id"], "value": {"note": note}}, {}

    def _merge(self, turn, view):
        levels = [view.leaf_level]
        if turn % 3 == 2 and len(view.levels) >= 2:
            levels.insert(0, view.levels[-2])
        for level in levels:
            nodes = tree_nodes(view, level, self.used)
            siblings: dict[str | None, list[dict]] = {}
            for node in nodes:
                siblings.setdefault(node["parent_id"], []).append(node)
            pairs = [kids[-2:] for kids in siblings.values() if len(kids) >= 2]
            if not pairs and len(nodes) >= 2:
                pairs = [nodes[-2:]]
            if not pairs:
                continue
            pair = min(pairs, key=lambda p: (p[0]["size"] + p[1]["size"], p[0]["node_id"]))
            target, other = pair
            self.claim(target["node_id"], other["node_id"])
            fields = {"node_id": target["node_id"], "value": {"others": [other["node_id"]]}}
            expect = {
                "size": target["size"] + other["size"],
                "others": [other["node_id"]],
                "other_clusters": [other["cluster_id"]] if level == view.leaf_level else [],
            }
            return fields, expect
        return None

    def _move(self, turn, view):
        levels = [view.leaf_level]
        if turn % 2 == 1 and len(view.levels) >= 3:
            levels.insert(0, view.levels[-2])
        for level in levels:
            depth = view.levels.index(level)
            if depth == 0:
                continue
            above = tree_nodes(view, view.levels[depth - 1], set())
            for node in tree_nodes(view, level, self.used):
                parents = [p for p in above if p["node_id"] != node["parent_id"]]
                if not parents:
                    continue
                parent = parents[turn % len(parents)]
                self.claim(node["node_id"], parent["node_id"])  # never merged away or moved
                fields = {"node_id": node["node_id"], "value": {"parent": parent["node_id"]}}
                return fields, {"was": node["parent_id"], "parent": parent["node_id"]}
        return None

    def _texts_of(self, view: View, cluster_id: int, n: int) -> list[str]:
        inside = view.rows.filter(pl.col("cluster_id") == cluster_id).sort("row_idx")
        return [t for t in inside["text_id"] if t not in self.texts][:n]

    def _move_texts(self, turn, view):
        nodes = tree_nodes(view, view.leaf_level, self.used)
        sources = [n for n in nodes if n["size"] >= 2 * MOVED_TEXTS]
        if not sources or len(nodes) < 2:
            return None
        source = sources[0]
        target = next(n for n in nodes if n["node_id"] != source["node_id"])
        chosen = self._texts_of(view, source["cluster_id"], MOVED_TEXTS)
        self.claim(source["node_id"], target["node_id"])
        self.texts |= set(chosen)
        was = {t: view.cluster_of[t] for t in chosen}
        return {"node_id": target["node_id"], "value": {}, "text_ids": tuple(chosen)}, {
            "cluster": target["cluster_id"],
            "was": was,
            "size": target["size"] + len(chosen),
        }

    def _split(self, turn, view):
        nodes = tree_nodes(view, view.leaf_level, self.used)
        sources = [n for n in nodes if n["size"] >= 2 * SPLIT_TEXTS]
        if not sources:
            return None
        source = sources[0]
        chosen = self._texts_of(view, source["cluster_id"], SPLIT_TEXTS)
        self.claim(source["node_id"])
        self.texts |= set(chosen)
        fields = {
            "node_id": source["node_id"],
            "value": {"name": f"Split {turn} of {(source['name'] or '')[:30]}".strip()},
            "text_ids": tuple(chosen),
        }
        return fields, {"size": source["size"] - len(chosen), "level": source["level_name"]}

    def _undo(self, turn, view):
        undone = {r.edit_id for r in self.records if r.undone_by is not None}
        undoable = [
            r
            for r in self.records
            if r.kind != "undo" and r.edit_id not in undone and r.via == "api"
        ]
        wanted = UNDONE_IN_TURN[turn % len(UNDONE_IN_TURN)]
        chosen = next((r for r in undoable if r.kind == wanted), undoable[0] if undoable else None)
        if chosen is None:
            return None
        return {"node_id": None, "value": {"edit": chosen.edit_id}}, {"target": chosen.edit_id}


# --- the checks ----------------------------------------------------------------------------------


def effect_shown(record: Record, view: View, by_id: dict[int, Record], fresh: bool) -> str | None:
    """None if the reader's tree shows the edit in force, else what is wrong. `fresh`: right
    after the edit (sizes and what an undo restored are checked too)."""
    from clustering_dagster.core.curation.edits import person_node

    node = view.node(record.node_id) if record.node_id else None
    kind, value, expect = record.kind, record.value, record.expect
    if kind == "undo":
        return effect_gone(by_id[value["edit"]], view, fresh)
    if kind == "split":
        node_id, cluster = person_node(expect["level"], record.edit_id)
        made = view.node(node_id)
        if made is None:
            return f"no cluster {node_id} made by the split"
        if made["name"] != value["name"]:
            return f"{node_id} is named {made['name']!r}"
        outside = [t for t in record.text_ids if view.cluster_of.get(t) != cluster]
        if outside:
            return f"{len(outside)} of its texts are not in {node_id}"
        if fresh and made["size"] != len(record.text_ids):
            return f"{node_id} holds {made['size']} texts, not {len(record.text_ids)}"
        return None
    if node is None:
        return f"{record.node_id} is not in the tree"
    if record.edit_id not in node["edit_ids"]:
        return f"{record.node_id} does not list edit {record.edit_id}"
    if kind == "rename" and (node["name"] != value["name"] or node["named_by"] != "person"):
        return f"{record.node_id} is named {node['name']!r} by {node['named_by']}"
    if kind == "tag" and value["tag"] not in node["tags"]:
        return f"{record.node_id} has tags {node['tags']}"
    if kind == "flag" and node["flag"] != value["note"]:
        return f"{record.node_id} has flag {node['flag']!r}"
    if kind == "move" and (node["parent_id"] != expect["parent"] or node["placed_by"] != "person"):
        return f"{record.node_id} is under {node['parent_id']}, not {expect['parent']}"
    if kind == "merge":
        left = [o for o in expect["others"] if o in view.nodes]
        if left:
            return f"merged cluster(s) {left} still in the tree"
        stray = [t for t, c in view.cluster_of.items() if c in expect["other_clusters"]]
        if stray:
            return f"{len(stray)} texts still in the merged cluster(s)"
        if fresh and node["size"] != expect["size"]:
            return f"{record.node_id} holds {node['size']} texts, not {expect['size']}"
    if kind == "move_texts":
        outside = [t for t in record.text_ids if view.cluster_of.get(t) != expect["cluster"]]
        if outside:
            return f"{len(outside)} of its texts are not in {record.node_id}"
        if fresh and node["size"] != expect["size"]:
            return f"{record.node_id} holds {node['size']} texts, not {expect['size']}"
    return None


def effect_gone(record: Record, view: View, fresh: bool) -> str | None:
    """None if the reader's tree shows nothing of the (undone, or not applying) edit."""
    from clustering_dagster.core.curation.edits import person_node

    holding = view.holding(record.edit_id)
    if holding:
        return f"edit {record.edit_id} still listed on {holding}"
    kind, value, expect = record.kind, record.value, record.expect
    if kind == "rename" and any(n["name"] == value["name"] for n in view.nodes.values()):
        return f"a cluster is still named {value['name']!r}"
    if kind == "tag" and any(value["tag"] in n["tags"] for n in view.nodes.values()):
        return f"a cluster is still tagged {value['tag']!r}"
    if kind == "flag" and any(n["flag"] == value["note"] for n in view.nodes.values()):
        return "a cluster still has its flag"
    if kind == "split" and person_node(expect["level"], record.edit_id)[0] in view.nodes:
        return "the split's cluster is still in the tree"
    if not fresh:
        return None
    node = view.node(record.node_id) if record.node_id else None
    if kind == "rename" and node is not None and node["name"] != expect["was"]:
        return f"{record.node_id} is named {node['name']!r}, not {expect['was']!r} again"
    if kind == "merge" and any(o not in view.nodes for o in expect["others"]):
        return "the merged clusters are not back"
    if kind == "move" and node is not None and node["parent_id"] != expect["was"]:
        return f"{record.node_id} is under {node['parent_id']}, not {expect['was']} again"
    if kind == "move_texts":
        back = [t for t, c in expect["was"].items() if view.cluster_of.get(t) != c]
        if back:
            return f"{len(back)} moved texts are not back in their clusters"
    return None


# --- the run -------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    return None if not values else float(np.percentile(np.asarray(values), q))


def make_edits(database: Path, part, size: Size, script: Script, failures: list[str]) -> None:
    """The scripted rounds through `make_edit`, each checked in the tree read back."""
    from clustering_dagster.core.curation.requests import EditRequest, make_edit
    from clustering_dagster.core.storage.store import connect, ensure_schema

    by_id = {}
    with connect(database) as conn:
        ensure_schema(conn)
        for turn in range(size.rounds):
            for kind in ROUND:
                view = view_of(conn, part)
                planned = script.plan(kind, turn, view)
                if planned is None:
                    failures.append(f"round {turn}: no cluster left for a {kind}")
                    continue
                fields, expect = planned
                request = EditRequest(
                    kind,
                    fields["node_id"],
                    fields["value"],
                    fields.get("text_ids", ()),
                    author="benchmark",
                    note=f"round {turn}",
                )
                began = time.perf_counter()
                try:
                    made = make_edit(conn, part, request)
                except Exception as err:  # reported, the script goes on
                    traceback.print_exc()
                    failures.append(f"round {turn} {kind} {fields}: {type(err).__name__}: {err}")
                    continue
                ms = 1000 * (time.perf_counter() - began)
                edit = made.edit
                record = Record(
                    edit.edit_id,
                    kind,
                    edit.node_id,
                    fields["value"] | edit.value,
                    tuple(fields.get("text_ids", ())),
                    ms=ms,
                    expect=expect,
                )
                if kind == "undo":
                    by_id[expect["target"]].undone_by = edit.edit_id
                script.records.append(record)
                by_id[edit.edit_id] = record
                wrong = effect_shown(record, view_of(conn, part), by_id, fresh=True)
                if wrong:
                    failures.append(f"edit {edit.edit_id} ({kind}) not applied: {wrong}")


def cli_edits(database: Path, part, script: Script, failures: list[str]) -> dict:
    """A rename, a tag, a text move and an undo through `clustering-dagster curate`, each
    checked in the tree read back; the wall seconds of each command."""
    from clustering_dagster.core.results.reading import read_only

    times = {}
    by_id = {r.edit_id: r for r in script.records}
    common = ["-r", RUN_CONFIG, "--author", "benchmark-cli", "--note", "from the CLI"]

    def run(kind: str, args: list[str], fields: dict, expect: dict) -> Record | None:
        try:
            shown, seconds = cli(database, "curate", *args, *common)
        except Exception as err:
            failures.append(f"cli {kind}: {err}")
            return None
        times.setdefault(kind, []).append(seconds)
        record = Record(
            shown["edit_id"],
            fields["kind"],
            shown["node_id"],
            shown["value"],
            tuple(fields.get("text_ids", ())),
            via="cli",
            expect=expect,
        )
        script.records.append(record)
        by_id[record.edit_id] = record
        with read_only(database) as conn:
            wrong = effect_shown(record, view_of(conn, part), by_id, fresh=True)
        if wrong:
            failures.append(f"edit {record.edit_id} ({record.kind}, CLI) not applied: {wrong}")
        return record

    with read_only(database) as conn:
        view = view_of(conn, part)
    top = tree_nodes(view, view.levels[0], script.used) or tree_nodes(view, view.levels[0], set())
    node = top[0]
    script.used.add(node["node_id"])
    name = f"Named from the CLI: {(node['name'] or '')[:30]}".strip()
    run(
        "rename",
        ["rename", part.dataset, node["node_id"], name],
        {"kind": "rename"},
        {"was": node["name"]},
    )
    fine = tree_nodes(view, view.leaf_level, script.used)
    fine = fine or tree_nodes(view, view.leaf_level, script.structural)
    tagged = None
    if fine:
        tagged = run(
            "tag", ["tag", part.dataset, fine[0]["node_id"], "cli-tag"], {"kind": "tag"}, {}
        )
        script.used.add(fine[0]["node_id"])
    fine = tree_nodes(view, view.leaf_level, script.structural)
    sources = [n for n in fine if n["size"] >= 4]
    if len(fine) < 2 or not sources:
        failures.append("no clusters left for the CLI's move-texts")
    else:
        source = sources[0]
        target = next(n for n in fine if n["node_id"] != source["node_id"])
        chosen = script._texts_of(view, source["cluster_id"], 2)
        script.claim(source["node_id"], target["node_id"])
        script.texts |= set(chosen)
        run(
            "move_texts",
            ["move-texts", part.dataset, *chosen, "--to", target["node_id"]],
            {"kind": "move_texts", "text_ids": chosen},
            {
                "cluster": target["cluster_id"],
                "was": {t: view.cluster_of[t] for t in chosen},
                "size": target["size"] + len(chosen),
            },
        )
    if tagged is not None:
        undo = run(
            "undo",
            ["undo", part.dataset, str(tagged.edit_id)],
            {"kind": "undo"},
            {"target": tagged.edit_id},
        )
        if undo is not None:
            tagged.undone_by = undo.edit_id
    for command in ("history", "attention"):
        try:
            _, seconds = cli(database, "curate", command, part.dataset, "-r", RUN_CONFIG)
            times[command] = [seconds]
        except Exception as err:
            failures.append(f"cli {command}: {err}")
    return {k: statistics.median(v) for k, v in times.items()}


def time_reads(database: Path, part, reads: int) -> tuple[list[float], float]:
    """`read_only` + `load_tree` of the curated tree, `reads` times (ms); `tree --json` (s)."""
    from clustering_dagster.core.results.reading import KEYWORD_NAMES, load_tree, read_only

    times = []
    for _ in range(reads):
        began = time.perf_counter()
        with read_only(database) as conn:
            tree = load_tree(conn, part, KEYWORD_NAMES)
        times.append(1000 * (time.perf_counter() - began))
        assert tree.nodes["named_by"].eq("person").any(), "the tree read has no edit"
    nodes, seconds = cli(database, "tree", part.dataset, "-r", RUN_CONFIG, "--alias", "keywords")
    assert len(nodes) == tree.nodes.height, (len(nodes), tree.nodes.height)
    return times, seconds


def statuses(database: Path, part) -> tuple[str, pl.DataFrame, pl.DataFrame]:
    """The published version, the edits' statuses against it (`edit_status`) and the history's
    (`curate history`'s latest status)."""
    from clustering_dagster.core.curation.records import edit_log
    from clustering_dagster.core.results.reading import read_only
    from clustering_dagster.core.storage.store import visible_version

    with read_only(database) as conn:
        version = visible_version(conn, "hierarchy", part)
        rows = conn.execute(
            "SELECT edit_id, status, reason, holders FROM clustering.edit_status "
            "WHERE dataset = ? AND run_config = ? AND version = ? ORDER BY edit_id",
            [part.dataset, part.run_config, version],
        ).pl()
        log = edit_log(conn, part)
    return version, rows, log


def classify(database: Path, part, script: Script, version: str, rows: pl.DataFrame) -> View:
    """Each edit's verdict against the re-clustered version, checked in the reader's tree."""
    from clustering_dagster.core.results.reading import read_only

    with read_only(database) as conn:
        view = view_of(conn, part)
    found = {r["edit_id"]: r for r in rows.iter_rows(named=True)}
    by_id = {r.edit_id: r for r in script.records}
    for record in script.records:
        row = found.get(record.edit_id)
        if row is None:
            record.verdict, record.why_lost = "lost", f"no status against version {version}"
            continue
        record.after, record.reason = row["status"], row["reason"]
        record.holders = json.loads(row["holders"]) if row["holders"] else None
        wanted = "undone" if record.undone_by is not None else "applied"
        if record.after == "needs_attention":
            wrong = effect_gone(record, view, fresh=False)
            record.verdict = "needs_attention" if wrong is None else "lost"
            record.why_lost = None if wrong is None else f"needs attention, yet {wrong}"
        elif record.after != wanted:
            record.verdict, record.why_lost = "lost", f"status {record.after}, not {wanted}"
        else:
            if wanted == "undone":
                wrong = effect_gone(record, view, fresh=False)
            else:
                wrong = effect_shown(record, view, by_id, fresh=False)
            record.verdict = "carried" if wrong is None else "lost"
            record.why_lost = None if wrong is None else f"{record.after}, yet {wrong}"
    return view


def run(work: Path, size: Size) -> dict:
    from clustering_dagster.core.storage.store import Partition

    began = time.perf_counter()
    dataset = f"banking77_curation_{size.texts}"
    database = work / "curation.duckdb"
    datasets = work / "curation_datasets"
    datasets.mkdir(parents=True, exist_ok=True)
    for stale in (database, Path(f"{database}.wal")):
        stale.unlink(missing_ok=True)
    part = Partition(dataset, RUN_CONFIG)
    pool = queries()
    new_texts = round(NEW_SHARE * size.texts)
    texts, extra = pool.head(size.texts), pool.slice(size.texts, new_texts)
    write_texts(datasets, dataset, texts)
    first = cluster_tree(database, datasets, dataset)
    print(f"clustered {texts.height:,} Banking77 queries in {first['seconds']:.0f} s", flush=True)
    from clustering_dagster.core.results.reading import read_only

    with read_only(database) as conn:
        shape = view_of(conn, part)
    levels = pl.DataFrame(list(shape.nodes.values())).group_by("level", "level_name").len()
    nodes_before = {name: n for _, name, n in levels.sort("level").iter_rows()}
    print(f"the tree: {nodes_before} clusters per level", flush=True)

    script, failures = Script(), []
    stage = time.perf_counter()
    make_edits(database, part, size, script, failures)
    edit_s = time.perf_counter() - stage
    cli_s = cli_edits(database, part, script, failures)
    reads, cli_tree_s = time_reads(database, part, size.reads)
    version_before, before, _ = statuses(database, part)
    known = {r["edit_id"]: r["status"] for r in before.iter_rows(named=True)}
    for record in script.records:
        record.before = known.get(record.edit_id)
        wanted = "undone" if record.undone_by is not None else "applied"
        if record.before != wanted:
            failures.append(f"edit {record.edit_id} ({record.kind}) was {record.before} before")
    with_edits = time.perf_counter()

    write_texts(datasets, dataset, pl.concat([texts, extra]))
    second = cluster_tree(database, datasets, dataset)
    print(
        f"appended {extra.height:,} other queries, re-clustered in {second['seconds']:.0f} s",
        flush=True,
    )
    version, after, log = statuses(database, part)
    if version == version_before:
        failures.append(f"the re-clustering published no new version (still {version})")
    view = classify(database, part, script, version, after)
    logged = dict(zip(log["edit_id"], log["status"], strict=True))
    disagree = [r.edit_id for r in script.records if logged.get(r.edit_id) != r.after]
    if disagree:
        failures.append(f"`curate history` disagrees with edit_status on edits {disagree}")
    try:
        listed, cli_s["attention_after"] = cli(
            database, "curate", "attention", part.dataset, "-r", RUN_CONFIG
        )
        attention = sorted(r.edit_id for r in script.records if r.after == "needs_attention")
        if sorted(row["edit_id"] for row in listed) != attention:
            failures.append(f"`curate attention` lists {[r['edit_id'] for r in listed]}")
    except Exception as err:
        failures.append(f"cli attention after the re-clustering: {err}")

    api = [r.ms for r in script.records if r.ms is not None]
    kinds = {
        kind: {
            v: sum(1 for r in script.records if r.kind == kind and (v == "made" or r.verdict == v))
            for v in ("made", "carried", "needs_attention", "lost")
        }
        for kind in KINDS
    }
    count = {v: sum(k[v] for k in kinds.values()) for v in ("carried", "needs_attention", "lost")}
    result = {
        "edits": len(script.records),
        "carried": count["carried"],
        "needs_attention": count["needs_attention"],
        "lost": count["lost"],
        "edit_ms": round(statistics.median(api), 1) if api else None,
        "tree_ms": round(statistics.median(reads), 1) if reads else None,
        "edit_p90_ms": round(percentile(api, 90), 1) if api else None,
        "edit_max_ms": round(max(api), 1) if api else None,
        "tree_max_ms": round(max(reads), 1) if reads else None,
        "cli_edit_s": round(statistics.median(cli_s[k] for k in cli_s if k in KINDS), 2)
        if any(k in KINDS for k in cli_s)
        else None,
        "cli_tree_s": round(cli_tree_s, 2),
        "cli_history_s": round(cli_s["history"], 2) if "history" in cli_s else None,
        "kinds": kinds,
        "applied_before": sum(1 for r in script.records if r.before in ("applied", "undone")),
        "failures": len(failures),
        "texts": texts.height,
        "new_texts": extra.height,
        "nodes_before": nodes_before,
        "nodes_after": len(view.nodes),
        "levels": view.levels,
        "cluster_s": round(first["seconds"], 1),
        "edits_s": round(edit_s, 1),
        "with_edits_s": round(with_edits - stage, 1),
        "recluster_s": round(second["seconds"], 1),
        "seconds": round(time.perf_counter() - began, 1),
        "machine": machine(),
    }
    report(script, failures, result, api, reads, cli_s, version_before, version)
    return result


def report(script, failures, result, api, reads, cli_s, version_before, version) -> None:
    print(machine())
    print(
        f"{result['texts']:,} texts, levels {', '.join(result['levels'])}; "
        f"{result['edits']} edits ({sum(r.via == 'cli' for r in script.records)} through the "
        f"CLI) made on version {version_before}, {result['applied_before']} applied (or undone) "
        f"there; {result['new_texts']:,} texts appended, re-clustered as version {version}"
    )
    print(
        f"make_edit: median {result['edit_ms']} ms, p90 {result['edit_p90_ms']} ms, "
        f"max {result['edit_max_ms']} ms over {len(api)} calls"
    )
    print(
        f"read-only connection + load_tree: median {result['tree_ms']} ms, max "
        f"{result['tree_max_ms']} ms over {len(reads)} reads; `tree --json` "
        f"{result['cli_tree_s']} s wall"
    )
    shown = ", ".join(f"{k} {v:.2f} s" for k, v in cli_s.items())
    print(f"CLI wall times (a fresh process each, start-up included): {shown}")
    print(f"{'kind':12s} {'made':>5s} {'carried':>8s} {'attention':>10s} {'lost':>5s}")
    for kind, counts in result["kinds"].items():
        print(
            f"{kind:12s} {counts['made']:5d} {counts['carried']:8d} "
            f"{counts['needs_attention']:10d} {counts['lost']:5d}"
        )
    print(
        f"{'all':12s} {result['edits']:5d} {result['carried']:8d} "
        f"{result['needs_attention']:10d} {result['lost']:5d}"
    )
    attention = [r for r in script.records if r.verdict == "needs_attention"]
    if attention:
        print("edits needing attention (first 8):")
    for record in attention[:8]:
        holders = "; ".join(
            f"{h['node_id']} {h['name']!r} {h['share']:.0%}" for h in (record.holders or [])[:3]
        )
        print(f"  {record.edit_id:3d} {record.kind:10s} {record.node_id}: {record.reason}")
        print(f"      its texts now in: {holders or '-'}")
    for record in script.records:
        if record.verdict == "lost":
            print(f"LOST {record.edit_id} {record.kind} {record.node_id}: {record.why_lost}")
    for failure in failures:
        print(f"FAILED {failure}")
    for name, (holds, bar) in BARS.items():
        value = (
            result["carried"] + result["needs_attention"]
            if name == "carried + needs_attention"
            else result[name]
        )
        print(f"bar {name} {bar}: {value} {'met' if holds(result) else 'UNMET'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="400 texts, for the tests")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if not args.smoke:
        OUT.mkdir(parents=True, exist_ok=True)
        result = run(OUT, FULL)
    else:
        with tempfile.TemporaryDirectory(prefix="curation_smoke_") as tmp:
            result = run(Path(tmp), SMOKE)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
