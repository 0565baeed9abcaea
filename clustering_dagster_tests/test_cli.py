"""The `clustering-dagster` terminal as a user runs it, one process per command, against a
materialised results database (see `support/explored.py`)."""

import io
import json
import os
import subprocess

import polars as pl
import pytest

from .support.explored import ALIAS, CLI, DATASET, LLM_CONFIG, explored_database
from .support.workspace import banking_slice


@pytest.fixture(scope="session")
def explored(tmp_path_factory):
    return explored_database(tmp_path_factory)


def assert_one_line_error(done: subprocess.CompletedProcess, *fragments: str) -> None:
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def tree_rows(explored, table: str, run_config: str = "default", alias: str | None = None):
    where = f" AND alias = '{alias}'" if alias else ""
    return explored.workspace.sql(
        f"SELECT * FROM clustering.{table} WHERE dataset = ? AND run_config = ?{where} "
        "ORDER BY position",
        [DATASET, run_config],
    )


def node_texts(explored, level_name: str, cluster_ids: list[int], run_config="default") -> set:
    return set(
        explored.workspace.sql(
            "SELECT t.text FROM clustering.assignments a "
            "JOIN clustering.texts t USING (dataset, run_config, row_idx) "
            "WHERE a.dataset = ? AND a.run_config = ? AND a.level_name = ? "
            "AND list_contains(?, a.cluster_id)",
            [DATASET, run_config, level_name, cluster_ids],
        )["text"]
    )


def test_datasets_lists_every_partition_with_results(explored):
    rows = {(r["dataset"], r["run_config"]): r for r in explored.json("datasets")}
    assert set(rows) == {(DATASET, "default"), (DATASET, LLM_CONFIG)}
    assert rows[(DATASET, "default")]["texts"] == 240
    levels = rows[(DATASET, "default")]["levels"]
    assert levels[0] == "coarse" and levels[-1] == "fine" and len(levels) >= 2
    assert ALIAS in rows[(DATASET, LLM_CONFIG)]["aliases"]
    table = explored.run("datasets")
    assert table.returncode == 0 and DATASET in table.stdout and LLM_CONFIG in table.stdout


def test_runs_lists_each_run_newest_first_with_its_stages(explored):
    rows = explored.json("runs")
    assert [r["run_config"] for r in rows] == [LLM_CONFIG, "default"]
    assert {"raw_texts", "cluster_hierarchy", "cluster_map"} <= set(rows[1]["stage_seconds"])
    assert [r["run_config"] for r in explored.json("runs", "--run-config", "default")] == [
        "default"
    ]
    table = explored.run("runs", "--limit", "1")
    assert table.returncode == 0 and rows[0]["dagster_run_id"] in table.stdout


def test_tree_prints_sizes_shares_and_keyword_names(explored):
    nodes = explored.json("tree", DATASET)
    hierarchy = tree_rows(explored, "hierarchy")
    assert [n["node_id"] for n in nodes] == hierarchy["node_id"].to_list()
    assert [n["name"] for n in nodes] == hierarchy["label"].to_list()
    tops = [n for n in nodes if n["level"] == 0]
    assert sum(n["size"] for n in tops) == 240
    assert sum(n["share"] for n in tops) == pytest.approx(1.0, abs=1e-5)  # JSON rounds to 6 places
    assert {n["level"] for n in explored.json("tree", DATASET, "--depth", "1")} == {0}
    printed = explored.run("tree", DATASET).stdout
    assert "names: keywords" in printed
    medium = hierarchy.filter(pl.col("level") == 1).row(0, named=True)
    assert f"  {medium['label']}" in printed and medium["node_id"] in printed


def test_tree_takes_the_llm_alias_names_when_there_is_one(explored):
    nodes = explored.json("tree", DATASET, "--run-config", LLM_CONFIG)
    merged = tree_rows(explored, "merged_hierarchy", LLM_CONFIG, ALIAS)
    assert [n["name"] for n in nodes] == merged["title"].to_list()
    assert any(n["level_name"].startswith("parent_") for n in nodes)
    assert all(n["summary"] for n in nodes)
    keywords = explored.json("tree", DATASET, "-r", LLM_CONFIG, "--alias", "keywords")
    labels = tree_rows(explored, "hierarchy", LLM_CONFIG)["label"].to_list()
    assert [n["name"] for n in keywords] == labels


def test_show_gives_name_keywords_parent_children_and_typical_texts(explored):
    hierarchy = tree_rows(explored, "hierarchy")
    inner = hierarchy.filter(pl.col("n_children") > 1).sort("level", descending=True)
    node = inner.row(0, named=True)  # the deepest node with children
    shown = explored.json("show", DATASET, node["node_id"], "--examples", "3")
    assert shown["name"] == node["label"] and shown["keywords"] == node["keywords"]
    assert shown["size"] == node["size"] and shown["parent"] == node["parent_id"]
    children = hierarchy.filter(pl.col("parent_id") == node["node_id"])
    assert [c["node_id"] for c in shown["children"]] == children["node_id"].to_list()
    parent_of = dict(zip(hierarchy["node_id"], hierarchy["parent_id"], strict=True))
    path = [node["node_id"]]
    while parent_of[path[0]] is not None:
        path.insert(0, parent_of[path[0]])
    assert [p["node_id"] for p in shown["path"]] == path
    typical = shown["typical_texts"]
    assert len(typical) == 3
    assert {t["text"] for t in typical} <= node_texts(
        explored, node["level_name"], [node["cluster_id"]]
    )
    assert [t["similarity"] for t in typical] == sorted(
        (t["similarity"] for t in typical), reverse=True
    )
    printed = explored.run("show", DATASET, node["node_id"]).stdout
    assert node["label"] in printed and "most typical texts" in printed


def test_a_merged_parent_reaches_its_texts_through_its_leaves(explored):
    merged = tree_rows(explored, "merged_hierarchy", LLM_CONFIG, ALIAS)
    parent = merged.filter(pl.col("level_name") == "parent_1").row(0, named=True)
    shown = explored.json("show", DATASET, parent["node_id"], "-r", LLM_CONFIG)
    assert shown["name"] == parent["title"] and shown["summary"] == parent["summary"]
    leaves = merged.filter(pl.col("parent_id") == parent["node_id"])
    assert [c["node_id"] for c in shown["children"]] == leaves["node_id"].to_list()
    listed = explored.json("texts", DATASET, parent["node_id"], "-r", LLM_CONFIG, "--limit", "0")
    expected = node_texts(explored, "fine", leaves["cluster_id"].to_list(), LLM_CONFIG)
    assert len(listed) == parent["size"] and {t["text"] for t in listed} == expected


def test_texts_lists_every_text_of_a_cluster_most_typical_first(explored):
    node = tree_rows(explored, "hierarchy").filter(pl.col("level") == 0).row(0, named=True)
    listed = explored.json("texts", DATASET, node["node_id"], "--limit", "0")
    assert len(listed) == node["size"]
    assert {t["text"] for t in listed} == node_texts(explored, "coarse", [node["cluster_id"]])
    similarities = [t["similarity"] for t in listed]
    assert similarities == sorted(similarities, reverse=True)
    assert len(explored.json("texts", DATASET, node["node_id"], "-n", "4")) == 4


def test_export_json_has_the_shape_of_llm_cluster(explored):
    done = explored.run("export", DATASET, "--format", "json")
    assert done.returncode == 0, done.stderr
    clusters = json.loads(done.stdout)
    assert isinstance(clusters, list) and clusters
    for cluster in clusters:
        assert set(cluster) == {"id", "items", "summary"}
        assert isinstance(cluster["id"], str) and isinstance(cluster["summary"], str)
        for item in cluster["items"]:
            assert set(item) == {"id", "content"}
            assert isinstance(item["id"], str) and isinstance(item["content"], str)
    fine = tree_rows(explored, "hierarchy").filter(pl.col("level_name") == "fine")
    assert [c["id"] for c in clusters] == fine["node_id"].to_list()
    assert [c["summary"] for c in clusters] == fine["label"].to_list()
    assert [len(c["items"]) for c in clusters] == fine["size"].to_list()
    ids = [item["id"] for c in clusters for item in c["items"]]
    text_ids = explored.workspace.sql(
        "SELECT text_id FROM clustering.texts WHERE dataset = ? AND run_config = 'default'",
        [DATASET],
    )["text_id"]
    assert sorted(ids) == sorted(text_ids)

    coarse = json.loads(
        explored.run(
            "export", DATASET, "--format", "json", "--level", "coarse", "--truncate", "20"
        ).stdout
    )
    assert all(c["id"].startswith("coarse/") for c in coarse)
    assert max(len(item["content"]) for c in coarse for item in c["items"]) == 23  # 20 + '...'


def test_export_csv_and_parquet_hold_one_row_per_text_with_every_level(explored, tmp_path):
    done = explored.run("export", DATASET, "--format", "csv")
    assert done.returncode == 0, done.stderr
    table = pl.read_csv(io.StringIO(done.stdout))
    assert table.height == 240
    levels = explored.json("datasets")[0]["levels"]
    assert table.columns == ["row_idx", "text_id", "text"] + [
        f"{level}_{column}" for level in levels for column in ("id", "name")
    ]
    out = tmp_path / "bank.parquet"
    written = explored.run("export", DATASET, "--format", "parquet", "--out", str(out))
    assert written.returncode == 0 and str(out) in written.stderr
    assert pl.read_parquet(out).equals(table)
    fine = tree_rows(explored, "hierarchy").filter(pl.col("level_name") == "fine")
    sizes = table.group_by("fine_id").len()
    assert dict(sizes.iter_rows()) == dict(fine.select("node_id", "size").iter_rows())


def test_register_and_list_still_work(tmp_path):
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    pl.DataFrame({"text": ["a card question", "a transfer question"]}).write_csv(
        datasets / "Support Tickets.csv"
    )
    (tmp_path / "home").mkdir()
    env = os.environ | {
        "CLUSTERING_DATASETS_DIR": str(datasets),
        "DAGSTER_HOME": str(tmp_path / "home"),
    }
    registered = subprocess.run([CLI, "register"], capture_output=True, text=True, env=env)
    assert registered.returncode == 0, registered.stderr
    assert "newly registered: support_tickets" in registered.stdout
    listed = subprocess.run([CLI, "list"], capture_output=True, text=True, env=env)
    assert "support_tickets" in listed.stdout and "run_config  default" in listed.stdout


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["tree", "nope"], ["no results for dataset 'nope'", DATASET]),
        (
            ["tree", DATASET, "-r", "kmeans"],
            ["no results for run configuration 'kmeans'", LLM_CONFIG],
        ),
        (["show", DATASET, "fine/999"], ["no cluster 'fine/999'", "coarse/0-"]),
        (["texts", DATASET, "12"], ["no cluster '12'", "fine/0-"]),
        (["tree", DATASET, "--alias", "gpt"], ["no alias 'gpt'", "keywords"]),
        (["export", DATASET, "--format", "xml"], ["'xml' is not one of", "--help"]),
        (["export", DATASET, "--format", "json", "--level", "tiny"], ["no level 'tiny'", "coarse"]),
        (["export", DATASET, "--format", "parquet"], ["--out"]),
        (["search", "refund", "--within", "fine/0"], ["--within needs one partition"]),
        (["texts", DATASET, "fine/0", "--limit", "-3"], ["--limit"]),
        (["tree"], ["Missing argument 'DATASET'"]),
        (["frobnicate"], ["No such command 'frobnicate'"]),
    ],
)
def test_a_mistake_ends_in_one_line_and_a_non_zero_exit(explored, args, fragments):
    assert_one_line_error(explored.run(*args), *fragments)


def test_a_missing_database_is_named(tmp_path):
    missing = tmp_path / "nowhere.duckdb"
    done = subprocess.run([CLI, "--db", str(missing), "datasets"], capture_output=True, text=True)
    assert_one_line_error(done, str(missing))


def test_run_clusters_a_dataset_as_a_recorded_dagster_run(tmp_path):
    from dagster import DagsterInstance, DagsterRunStatus

    datasets = tmp_path / "datasets"
    datasets.mkdir()
    banking_slice(4).write_csv(datasets / "tickets.csv")
    env = os.environ | {
        "CLUSTERING_DATASETS_DIR": str(datasets),
        "CLUSTERING_DUCKDB_PATH": str(tmp_path / "results.duckdb"),
        "DAGSTER_HOME": str(tmp_path / "home"),
        "HF_HUB_OFFLINE": "1",
    }
    (tmp_path / "home").mkdir()
    wrong = subprocess.run([CLI, "run", "nosuch"], capture_output=True, text=True, env=env)
    assert (
        wrong.returncode == 1
        and "no dataset 'nosuch'" in wrong.stderr
        and "tickets" in wrong.stderr
    )
    done = subprocess.run([CLI, "run", "tickets"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    instance = DagsterInstance.from_config(str(tmp_path / "home"))
    [run] = instance.get_runs()
    assert run.job_name == "cluster_texts" and run.status == DagsterRunStatus.SUCCESS
    assert run.tags["dagster/partition"] == "tickets|default"
    listed = subprocess.run(
        [CLI, "--db", str(tmp_path / "results.duckdb"), "datasets", "--json"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert json.loads(listed.stdout)[0]["texts"] == 80
