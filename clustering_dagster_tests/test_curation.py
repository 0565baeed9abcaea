"""People's edits of a tree: every kind through the CLI, undo and the audit history, refusals
that change nothing, and edits carried over real re-clusterings (kept, split and vanished
clusters; text moves following the texts) with edits made while a run writes.

The partition `bank|default` is clustered by the README's own command in a child process
(`support.faults.Sandbox`): first with a coarse finest level (clusters of at least 35 texts, two
or more intents each), then with the shipped configuration, whose finer clusters split them."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from clustering_dagster.core.curation.apply import apply_edits
from clustering_dagster.core.curation.edits import PERSON_ID_BASE, Edit, active

from .support.faults import Sandbox, sample_texts, step_start
from .support.paths import REPO

OLD = sample_texts(0, 10)  # 200 queries of 10 intents
APPENDED = sample_texts(10, 1)  # 20 queries of an 11th intent: 10% more
PART = ["-r", "default"]


def cli(database: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "clustering_dagster.cli", "--db", str(database), *args],
        capture_output=True, text=True, cwd=REPO, timeout=300,
        env={**os.environ, "CLUSTERING_AUTHOR": "ana", "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    if check:
        assert done.returncode == 0, done.stderr
    return done


def as_json(database: Path, *args: str):
    return json.loads(cli(database, *args, "--json").stdout)


def tree(database: Path) -> dict[str, dict]:
    return {n["node_id"]: n for n in as_json(database, "tree", "bank", *PART)}


def edits_count(database: Path) -> int:
    return len(as_json(database, "curate", "history", "bank", *PART))


def set_finest(box: Sandbox, min_cluster_size: int | float) -> None:
    configs = yaml.safe_load((REPO / "data" / "run_configs.yaml").read_text())
    configs["default"]["levels"][0]["min_cluster_size"] = min_cluster_size
    box.configs.write_text(yaml.safe_dump(configs))


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Sandbox:
    """`bank|default` clustered once from OLD with a coarse finest level."""
    box = Sandbox(tmp_path_factory.mktemp("curation"), lock_timeout_s=600)
    set_finest(box, 35)
    box.write_dataset("bank", OLD)
    assert box.register().returncode == 0
    run = box.start()
    assert run.finish(), run.output[-3000:]
    return box


@pytest.fixture
def copy(sandbox, tmp_path) -> Path:
    database = tmp_path / "copy.duckdb"
    shutil.copy(sandbox.database, database)
    return database


def _leaves(nodes: dict) -> list[dict]:
    finest = max(n["level"] for n in nodes.values())
    return sorted(
        (n for n in nodes.values() if n["level"] == finest),
        key=lambda n: (-n["size"], n["node_id"]),
    )


def test_every_kind_of_edit_shows_in_every_reader_and_undo_reverts_it(copy):
    nodes = tree(copy)
    big, second, third = (n["node_id"] for n in _leaves(nodes)[:3])
    parents = sorted({n["parent_id"] for n in _leaves(nodes)} - {nodes[big]["parent_id"]})

    renamed = as_json(copy, "curate", "rename", "bank", big, "Card problems", "--summary",
                      "Cards that fail", *PART, "--note", "clearer")  # fmt: skip
    assert renamed["kind"] == "rename" and renamed["author"] == "ana"
    cli(copy, "curate", "tag", "bank", big, "cards", *PART)
    cli(copy, "curate", "flag", "bank", second, "two intents in one", *PART)
    if parents:
        cli(copy, "curate", "move", "bank", third, parents[0], *PART)
    texts = as_json(copy, "texts", "bank", second, *PART, "-n", "0")
    moved, split = texts[0]["text_id"], [t["text_id"] for t in texts[1:4]]
    cli(copy, "curate", "move-texts", "bank", moved, "--to", big, *PART)
    made = as_json(copy, "curate", "split", "bank", second, *split, "--name", "Picked", *PART)
    person = f"{big.split('/')[0]}/{PERSON_ID_BASE + made['edit_id']}"

    after = tree(copy)
    assert after[big]["name"] == "Card problems" and after[big]["named_by"] == "person"
    assert after[big]["summary"] == "Cards that fail" and after[big]["tags"] == ["cards"]
    assert after[second]["flag"] == "two intents in one"
    assert after[person]["name"] == "Picked" and after[person]["size"] == 3
    assert after[person]["parent_id"] == nodes[second]["parent_id"]
    assert after[second]["size"] == nodes[second]["size"] - 4
    assert after[big]["size"] == nodes[big]["size"] + 1
    if parents:
        assert after[third]["parent_id"] == parents[0] and after[third]["placed_by"] == "person"
    assert sum(n["size"] for n in after.values() if n["level"] == 0) == OLD.height
    in_big = {t["text_id"] for t in as_json(copy, "texts", "bank", big, *PART, "-n", "0")}
    assert moved in in_big
    in_person = {t["text_id"] for t in as_json(copy, "texts", "bank", person, *PART, "-n", "0")}
    assert in_person == set(split)
    shown = as_json(copy, "show", "bank", big, *PART)
    assert shown["name"] == "Card problems" and shown["tags"] == ["cards"]
    out = copy.parent / "export.csv"
    cli(copy, "export", "bank", *PART, "--format", "csv", "--out", str(out))
    exported = pl.read_csv(out)
    leaf_level = nodes[big]["level_name"]
    assert exported.filter(pl.col("text_id") == moved)[f"{leaf_level}_id"][0] == big
    assert exported.filter(pl.col("text_id") == moved)[f"{leaf_level}_name"][0] == "Card problems"

    merged_away = _leaves(after)[-1]["node_id"]
    cli(copy, "curate", "merge", "bank", big, merged_away, *PART)
    assert merged_away not in tree(copy)
    history = as_json(copy, "curate", "history", "bank", big, *PART)
    assert [h["kind"] for h in history] == ["rename", "tag", "move_texts", "merge"]
    assert history[0]["note"] == "clearer" and all(h["status"] == "applied" for h in history)

    undo = as_json(copy, "curate", "undo", "bank", str(history[-1]["edit_id"]), *PART)
    assert merged_away in tree(copy)
    undo_rename = as_json(copy, "curate", "undo", "bank", str(renamed["edit_id"]), *PART)
    assert tree(copy)[big]["name"] == nodes[big]["name"]
    assert tree(copy)[big]["named_by"] == "machine"
    log = {h["edit_id"]: h for h in as_json(copy, "curate", "history", "bank", *PART)}
    assert log[renamed["edit_id"]]["status"] == "undone"
    assert log[renamed["edit_id"]]["undone_by"] == undo_rename["edit_id"]
    assert log[undo["edit_id"]]["kind"] == "undo"
    table = cli(copy, "curate", "history", "bank", big, *PART).stdout
    assert "'Card problems'" in table and "undone" in table


def test_bad_edits_are_one_line_and_change_nothing(copy):
    nodes = tree(copy)
    leaves = _leaves(nodes)
    leaf, other = leaves[0], leaves[1]
    upper = nodes[leaf["parent_id"]] if leaf["parent_id"] else None
    before = edits_count(copy)
    text = as_json(copy, "texts", "bank", other["node_id"], *PART, "-n", "1")[0]["text_id"]
    bad = [
        (["rename", "bank", "fine/99999", "x"], "no cluster 'fine/99999'"),
        (["rename", "bank", leaf["node_id"], "   "], "the name is empty"),
        (["rename", "bank", leaf["node_id"], "a\x1b[31mb"], "holds a control or format character"),
        (["tag", "bank", leaf["node_id"], "x" * 61], "the tag has 61 characters; at most 60"),
        (["merge", "bank", leaf["node_id"], leaf["node_id"]], "cannot be merged into itself"),
        (["split", "bank", leaf["node_id"], text, "--name", "x"], "is not in"),
        (["move-texts", "bank", "nope:1", "--to", leaf["node_id"]], "no text with id 'nope:1'"),
        (["undo", "bank", "4242"], "no edit 4242"),
        (["rename", "nobank", leaf["node_id"], "x"], "no results for dataset 'nobank'"),
        (["rename", "bank", "parent_1/0", "x"], "is not a cluster of the clustering levels"),
    ]
    if upper is not None:
        bad += [
            (
                ["merge", "bank", leaf["node_id"], upper["node_id"]],
                "merge joins clusters of one level",
            ),
            (["move", "bank", upper["node_id"], leaf["node_id"]], "would make a cycle"),
            (
                ["move-texts", "bank", text, "--to", upper["node_id"]],
                "works on clusters of the finest",
            ),
        ]
    for args, line in bad:
        done = cli(copy, "curate", *args, *PART, check=False)
        assert done.returncode != 0, args
        assert line in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr
    assert edits_count(copy) == before and tree(copy) == nodes


def test_edits_carry_over_real_reclusterings_and_wait_for_a_running_one(sandbox):
    db = sandbox.database
    first = tree(db)
    leaves = _leaves(first)
    assert len(leaves) >= 3 and all(n["size"] >= 35 for n in leaves)  # coarse: mixed intents
    gone, split_up = leaves[-1], leaves[0]
    made = {}
    for node in (gone, split_up):
        made[node["node_id"]] = as_json(db, "curate", "rename", "bank", node["node_id"],
                                        f"Named {node['node_id']}", *PART)["edit_id"]  # fmt: skip
    tagged = as_json(db, "curate", "tag", "bank", split_up["node_id"], "checked", *PART)["edit_id"]

    # the shipped finer level splits the coarse clusters; gone's texts are removed
    gone_texts = {
        t["text"] for t in as_json(db, "texts", "bank", gone["node_id"], *PART, "-n", "0")
    }
    set_finest(sandbox, 0.0055)
    sandbox.write_dataset("bank", OLD.filter(~pl.col("text").is_in(list(gone_texts))))
    run = sandbox.start()
    assert run.finish(), run.output[-3000:]
    second = tree(db)
    log = {h["edit_id"]: h for h in as_json(db, "curate", "history", "bank", *PART)}
    version = log[tagged]["made_on"]
    assert all(h["made_on"] == version for h in log.values())
    vanished = log[made[gone["node_id"]]]
    assert vanished["status"] == "needs_attention" and vanished["holders"] == []
    assert "no longer in the tree" in vanished["reason"]
    for edit_id in (made[split_up["node_id"]], tagged):
        split = log[edit_id]
        assert split["status"] == "needs_attention", split
        holders = split["holders"]
        assert len(holders) >= 2 and all(h["node_id"] in second for h in holders)
        assert abs(sum(h["share"] for h in holders) - 1) < 0.01 or len(holders) == 5
    attention = as_json(db, "curate", "attention", "bank", *PART)
    assert {a["edit_id"] for a in attention} == {
        made[gone["node_id"]],
        made[split_up["node_id"]],
        tagged,
    }
    assert "edits needing attention" in cli(db, "changes", "bank", *PART).stdout

    # the same configuration with 10% more texts keeps most clusters: their edits carry over
    leaves = _leaves(second)
    kept_edits = {}
    for node in leaves[:4]:
        kept_edits[node["node_id"]] = as_json(db, "curate", "rename", "bank", node["node_id"],
                                              f"Kept {node['node_id']}", *PART)["edit_id"]  # fmt: skip
    target = leaves[0]["node_id"]
    mover = as_json(db, "texts", "bank", leaves[1]["node_id"], *PART, "-n", "1")[0]
    as_json(db, "curate", "move-texts", "bank", mover["text_id"], "--to", target, *PART)
    sandbox.write_dataset("bank", pl.concat([OLD.filter(~pl.col("text").is_in(list(gone_texts))),
                                             APPENDED]))  # fmt: skip
    run = sandbox.start()
    assert run.wait_for(step_start("projections")) is not None, run.output[-3000:]
    during = cli(db, "curate", "flag", "bank", target, "made while a run writes", *PART, "--json")
    assert run.finish(), run.output[-3000:]
    third = tree(db)
    log = {h["edit_id"]: h for h in as_json(db, "curate", "history", "bank", *PART)}
    flagged = log[json.loads(during.stdout)["edit_id"]]
    carried = [n for n, e in kept_edits.items() if log[e]["status"] == "applied"]
    assert len(carried) >= 3, {n: log[e] for n, e in kept_edits.items()}
    for node_id in carried:
        assert (
            third[node_id]["name"] == f"Kept {node_id}" and third[node_id]["named_by"] == "person"
        )
    for node_id, edit_id in kept_edits.items():  # nothing lost: applied, or reported
        assert (log[edit_id]["status"] == "applied") == (node_id in third)
        assert log[edit_id]["status"] in ("applied", "needs_attention")
    if target in third:
        assert flagged["status"] == "applied" and third[target]["flag"] == "made while a run writes"
        moved_to = as_json(db, "texts", "bank", target, *PART, "-n", "0")
        assert mover["text_id"] in {t["text_id"] for t in moved_to}  # the move follows the text
    statuses = sandbox.read(
        "SELECT DISTINCT version FROM clustering.edit_status WHERE dataset = 'bank'"
    )
    assert statuses.height == 3  # one standing of the edits per published version


def _edit(edit_id, kind, node=None, texts=(), **value) -> Edit:
    level, cluster = (None, None) if node is None else (node.split("/")[0], int(node.split("/")[1]))
    return Edit(edit_id, kind, level, cluster, value, "ana", texts=tuple(texts))


def _toy() -> tuple[pl.DataFrame, pl.DataFrame]:
    """coarse/0 > fine/0 (3 texts), fine/1 (2); coarse/1 > fine/2 (1)."""
    rows = [
        ("coarse/0", None, 0, "coarse", 0, 5, 2, "c0"),
        ("fine/0", "coarse/0", 1, "fine", 0, 3, 0, "f0"),
        ("fine/1", "coarse/0", 1, "fine", 1, 2, 0, "f1"),
        ("coarse/1", None, 0, "coarse", 1, 1, 1, "c1"),
        ("fine/2", "coarse/1", 1, "fine", 2, 1, 0, "f2"),
    ]
    nodes = pl.DataFrame(
        [(*r[:6], r[5] / 6, r[6], r[7], None, [], i, "hdbscan") for i, r in enumerate(rows)],
        schema={"node_id": pl.String, "parent_id": pl.String, "level": pl.Int32,
                "level_name": pl.String, "cluster_id": pl.Int32, "size": pl.Int64,
                "share": pl.Float64, "n_children": pl.Int32, "name": pl.String,
                "summary": pl.String, "keywords": pl.List(pl.String), "position": pl.Int32,
                "method": pl.String},
        orient="row",
    )  # fmt: skip
    leaves = pl.DataFrame(
        {"row_idx": range(6), "text_hash": list("abcdef"), "cluster_id": [0, 0, 0, 1, 1, 2]}
    )
    return nodes, leaves


def test_edits_apply_in_order_and_those_that_no_longer_fit_say_why():
    nodes, leaves = _toy()
    edits = [
        _edit(1, "rename", "fine/1", name="One"),
        _edit(2, "merge", "fine/0", others=[["fine", 1]]),
        _edit(3, "move", "fine/0", parent=["coarse", 1]),
        _edit(4, "split", "fine/2", texts=["f"], name="Alone"),
        _edit(5, "tag", "fine/9", tag="x"),  # a cluster gone since
        _edit(6, "undo", edit=5),
        _edit(7, "move_texts", "fine/2", texts=["zz"]),  # a text gone since
    ]
    done = apply_edits(nodes, leaves, active(edits))
    by_id = {r["node_id"]: r for r in done.nodes.to_dicts()}
    assert "fine/1" not in by_id and by_id["fine/0"]["size"] == 5
    assert by_id["fine/0"]["parent_id"] == "coarse/1" and by_id["coarse/1"]["size"] == 6
    assert by_id["coarse/0"]["size"] == 0 and by_id["coarse/0"]["n_children"] == 0
    person = by_id[f"fine/{PERSON_ID_BASE + 4}"]
    assert person["name"] == "Alone" and person["size"] == 1 and by_id["fine/2"]["size"] == 0
    assert done.moved.sort("row_idx").rows() == [(3, 0), (4, 0), (5, PERSON_ID_BASE + 4)]
    assert done.unapplied == {7: "none of its texts is in the partition any more"}
    assert [r["node_id"] for r in done.nodes.to_dicts()][0] == "coarse/1"  # largest first
    cycle = apply_edits(nodes, leaves, [_edit(1, "move", "coarse/0", parent=["fine", 0])])
    assert "makes a cycle" in cycle.unapplied[1]
    nothing = apply_edits(nodes, leaves, [])
    assert nothing.nodes.drop("named_by", "placed_by", "tags", "flag", "edit_ids").equals(nodes)
