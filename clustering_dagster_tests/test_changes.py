"""What changed since the last run: the change report of hand-made lineages and sizes
(`core/clustering/changes.py`), then a real re-clustering of Banking77 queries joined by a new
topic (HWU64 alarm queries): the table, the asset check, the CLI and the size history."""

import json
import subprocess

import polars as pl
import pytest

from clustering_dagster.assets import (
    cluster_hierarchy,
    cluster_labels,
    cluster_levels,
    embeddings,
    projections,
    raw_texts,
)
from clustering_dagster.core.clustering.changes import (
    alerts,
    change_report,
    event_counts,
    new_texts,
    ordered,
    readable,
)
from clustering_dagster.core.config.run_config import ChangesConfig
from clustering_dagster.core.errors import InputError
from clustering_dagster.core.results.changes import changes, size_history
from clustering_dagster.core.storage.store import (
    HIDDEN_ID,
    LAYOUT,
    STORE,
    Partition,
    connect,
    ensure_schema,
)

from .support.explored import CLI
from .support.paths import REPO
from .support.workspace import banking_slice, metadata

DEFAULTS = ChangesConfig()


def _lineage(*rows, level=0, name="fine"):
    """(cluster_id, previous_cluster_id, event) rows of one level."""
    return pl.DataFrame(
        [(level, name, *row) for row in rows],
        schema={
            "level": pl.Int32,
            "level_name": pl.String,
            "cluster_id": pl.Int32,
            "previous_cluster_id": pl.Int32,
            "event": pl.String,
        },
        orient="row",
    )


def _sizes(sizes: dict, level=0, name="fine"):
    return pl.DataFrame(
        [(level, name, c, s) for c, s in sizes.items()],
        schema={
            "level": pl.Int32,
            "level_name": pl.String,
            "cluster_id": pl.Int32,
            "size": pl.Int64,
        },
        orient="row",
    )


def _previous(sizes: dict, name="fine"):
    return pl.DataFrame(
        [(name, c, s, f"topic {c}") for c, s in sizes.items()],
        schema={
            "level_name": pl.String,
            "cluster_id": pl.Int32,
            "size": pl.Int64,
            "label": pl.String,
        },
        orient="row",
    )


def _fresh(counts: dict, name="fine"):
    return pl.DataFrame(
        [(name, c, n) for c, n in counts.items()],
        schema={"level_name": pl.String, "cluster_id": pl.Int32, "new_texts": pl.Int64},
        orient="row",
    )


NO_PREVIOUS = _previous({})

# previous: 1,000 texts in 8 clusters; now 2,000 texts
BEFORE = {0: 250, 1: 200, 2: 150, 3: 100, 4: 100, 5: 100, 6: 50, 7: 50}
NOW = {0: 315, 1: 300, 2: 120, 8: 80, 9: 300, 5: 500, 6: 120, 10: 200, 11: 60, 12: 5}
LINEAGE = _lineage(
    (0, 0, "kept"),
    (1, 1, "kept"),
    (2, 2, "kept"),
    (8, 2, "split"),  # a piece of 2, under a fresh id, mostly old texts
    (9, 3, "merged"),  # 3 and 4 joined under a fresh id
    (9, 4, "merged"),
    (5, 5, "kept"),  # share 10% -> 25%: emerging by growth
    (11, 5, "split"),  # a piece of 5, mostly new texts: a new topic
    (6, 6, "kept"),  # 5% -> 6%: a riser, not emerging
    (None, 7, "vanished"),
    (10, None, "new"),  # 10% of the texts: emerging
    (12, None, "new"),  # 0.25%: too small to be emerging
)
FRESH = {0: 65, 1: 100, 2: 0, 8: 10, 9: 100, 5: 400, 6: 70, 10: 200, 11: 55, 12: 5}


def _report(**settings):
    return change_report(
        LINEAGE,
        _sizes(NOW),
        _fresh(FRESH),
        _previous(BEFORE),
        ChangesConfig(**settings),
    )


def _by_id(report):
    return {row["cluster_id"]: row for row in report.iter_rows(named=True)}


def test_every_event_with_sizes_and_shares_before_and_now():
    rows = _by_id(_report())
    assert {c: r["event"] for c, r in rows.items()} == {
        0: "kept", 1: "kept", 2: "kept", 8: "split", 9: "merged", 5: "kept", 11: "split",
        6: "kept", 7: "vanished", 10: "new", 12: "new",
    }  # fmt: skip
    kept = rows[5]
    assert (kept["previous_size"], kept["size"]) == (100, 500)
    assert kept["previous_share"] == pytest.approx(0.10) and kept["share"] == pytest.approx(0.25)
    assert kept["share_change"] == pytest.approx(0.15) and kept["growth"] == pytest.approx(2.5)
    assert kept["previous_label"] == "topic 5" and kept["new_texts"] == 400
    shrinking = rows[0]
    assert shrinking["share_change"] == pytest.approx(0.1575 - 0.25) and shrinking["growth"] < 1
    gone = rows[7]
    assert (gone["size"], gone["previous_size"], gone["share"]) == (0, 50, 0.0)
    assert gone["share_change"] == pytest.approx(-0.05) and gone["previous_label"] == "topic 7"
    assert rows[9]["previous_cluster_ids"] == [3, 4]
    assert rows[8]["previous_cluster_ids"] == [2] and rows[10]["previous_cluster_ids"] == []
    for fresh in (8, 9, 10, 11, 12):  # no previous cluster of that id: nothing to compare
        assert rows[fresh]["previous_size"] is None and rows[fresh]["growth"] is None
        assert rows[fresh]["previous_label"] is None


def test_emerging_new_by_share_grown_by_factor_and_a_new_topic_behind_a_split():
    rows = _by_id(_report())
    assert {c for c, r in rows.items() if r["emerging"]} == {5, 10, 11}
    # a higher share bar leaves the small new topic out; a higher factor the grown cluster
    assert {c for c, r in _by_id(_report(emerging_min_share=0.05)).items() if r["emerging"]} == {
        5,
        10,
    }
    assert {c for c, r in _by_id(_report(emerging_growth=3.0)).items() if r["emerging"]} == {
        10,
        11,
    }


def test_growth_needs_the_factor_and_the_share_together():
    lineage = _lineage((0, 0, "kept"), (1, 1, "kept"), (2, 2, "kept"))
    previous = _previous({0: 2, 1: 100, 2: 898})  # of 1,000
    now = _sizes({0: 6, 1: 190, 2: 804})  # 0: x3 but +0.4 pts; 1: +9 pts but x1.9
    report = change_report(lineage, now, _fresh({}), previous, DEFAULTS)
    assert not report["emerging"].any()
    previous = _previous({0: 10, 1: 100, 2: 890})
    exactly = _sizes({0: 20, 1: 100, 2: 880})  # 1% -> 2%: x2 and +1 pt, both at the bar
    settings = ChangesConfig(emerging_min_share=0.01)
    report = change_report(lineage, exactly, _fresh({}), previous, settings)
    assert _by_id(report)[0]["emerging"] and not _by_id(report)[1]["emerging"]


def test_a_cluster_that_took_in_another_is_merged_never_emerging_by_growth():
    lineage = _lineage((0, 0, "kept"), (0, 1, "merged"), (2, 2, "kept"))
    previous = _previous({0: 100, 1: 100, 2: 800})
    report = change_report(lineage, _sizes({0: 200, 2: 800}), _fresh({}), previous, DEFAULTS)
    merged = _by_id(report)[0]
    assert merged["event"] == "merged" and merged["previous_cluster_ids"] == [0, 1]
    assert merged["growth"] == pytest.approx(2.0) and not merged["emerging"]


def test_a_first_clustering_is_all_new_and_nothing_emerging():
    lineage = _lineage((0, None, "new"), (1, None, "new"))
    report = change_report(
        lineage, _sizes({0: 60, 1: 40}), _fresh({0: 60, 1: 40}), NO_PREVIOUS, DEFAULTS
    )
    assert set(report["event"]) == {"new"}
    assert not report["emerging"].any() and report["previous_share"].is_null().all()
    assert report.sort("cluster_id")["share"].to_list() == pytest.approx([0.6, 0.4])


def test_a_level_clustered_for_the_first_time_compares_with_nothing():
    lineage = pl.concat(
        [
            _lineage((0, 0, "kept"), (1, None, "new")),
            _lineage((0, None, "new"), (1, None, "new"), level=0, name="medium"),
        ]
    ).with_columns(level=pl.when(pl.col("level_name") == "fine").then(1).otherwise(0))
    sizes = pl.concat([_sizes({0: 50, 1: 50}, 1), _sizes({0: 50, 1: 50}, 0, "medium")])
    report = change_report(lineage, sizes, _fresh({1: 50}), _previous({0: 50}), DEFAULTS)
    emerging = report.filter("emerging").select("level_name", "cluster_id").rows()
    assert emerging == [("fine", 1)]  # the new fine cluster; the new level has no past


def test_the_folded_cluster_is_never_reported_and_hidden_clusters_tell_nothing():
    # previous: 2 was shown; now its texts are below the privacy threshold, in the folded node
    lineage = _lineage((0, 0, "kept"), (1, 1, "kept"), (None, 2, "vanished"))
    previous = _previous({0: 400, 1: 400, 2: 150, HIDDEN_ID: 50})
    now = _sizes({0: 420, 1: 400, HIDDEN_ID: 380})  # the folded node grew 7.6x
    fresh = _fresh({0: 20, HIDDEN_ID: 200})
    report = change_report(lineage, now, fresh, previous, DEFAULTS, private=True)
    assert HIDDEN_ID not in report["cluster_id"].to_list()
    rows = _by_id(report)
    assert rows[0]["share"] == pytest.approx(420 / 1200)  # of every text, the folded included
    assert rows[2]["event"] == "vanished" and rows[2]["previous_label"] is None
    assert rows[0]["previous_label"] == "topic 0" and not report["emerging"].any()
    shown = change_report(lineage, now, fresh, previous, DEFAULTS)  # no threshold: labelled
    assert _by_id(shown)[2]["previous_label"] == "topic 2"


def test_the_order_the_counts_and_the_alerts():
    report = ordered(_report())
    assert report["cluster_id"].to_list() == [5, 10, 11, 6, 12, 8, 9, 7, 0, 2, 1]
    counts = event_counts(report).row(0, named=True)
    assert counts == {
        "level_name": "fine", "new": 2, "split": 2, "kept": 5, "merged": 1, "vanished": 1,
        "emerging": 3,
    }  # fmt: skip
    assert alerts(report, DEFAULTS)["cluster_id"].to_list() == [5, 10, 11]
    assert alerts(report, ChangesConfig(alert_share=0.05))["cluster_id"].to_list() == [5, 10]
    shown = readable(report, {"fine/5": "alarm clock"}, limit=3).to_dicts()
    assert shown[0] == {
        "cluster": "fine/5", "name": "alarm clock", "event": "kept", "texts": "100 -> 500",
        "share": "25.0%", "change": "+15.0 pts", "emerging": "emerging",
    }  # fmt: skip
    assert shown[1]["texts"] == "200" and shown[1]["change"] == "" and len(shown) == 3
    assert readable(report.filter(pl.col("cluster_id") == 9))["event"][0] == "merged (3, 4)"


def test_new_texts_are_those_the_previous_clustering_of_the_level_did_not_hold():
    before = pl.DataFrame(
        {"level_name": ["fine"] * 3, "text_hash": ["a", "b", "c"], "cluster_id": [0, 0, 1]}
    )
    now = pl.DataFrame(
        {
            "level_name": ["fine"] * 5 + ["medium"],
            "text_hash": ["a", "b", "c", "d", "e", "a"],
            "cluster_id": [0, 0, 1, 1, 2, 0],
        }
    )
    counts = new_texts(now, before).sort("level_name", "cluster_id").rows()
    assert counts == [("fine", 1, 1), ("fine", 2, 1), ("medium", 0, 1)]


def test_a_file_of_layout_4_gains_the_changes_table(tmp_path):
    with connect(tmp_path / "layout4.duckdb") as conn:
        ensure_schema(conn)
        conn.execute("DROP VIEW clustering.cluster_changes")
        conn.execute(f"DROP TABLE {STORE}.cluster_changes")
        conn.execute("UPDATE clustering.layout SET version = 4")
        ensure_schema(conn)
        assert conn.execute("SELECT count(*) FROM clustering.cluster_changes").fetchone() == (0,)
        assert conn.execute("SELECT max(version) FROM clustering.layout").fetchone()[0] == LAYOUT
        part = Partition("nothing", "default")
        assert changes(conn, part).height == 0
        assert size_history(conn, part, "fine", 0).height == 0
        with pytest.raises(InputError, match="no change reports"):
            changes(conn, part, since_run="abc")


# The stages up to the named tree: the report, the check and the CLI's names need no more.
TREE = [raw_texts, embeddings, projections, cluster_levels, cluster_labels, cluster_hierarchy]


def _alarm_queries(per_intent: int) -> pl.DataFrame:
    """Real HWU64 alarm queries (setting and asking about alarms): a topic banking lacks."""
    hwu = pl.read_csv(REPO / "data" / "hwu64" / "hwu64.csv")
    alarms = hwu.filter(pl.col("intent").is_in(["alarm_query", "alarm_set"]))
    return (
        alarms.group_by("intent", maintain_order=True)
        .head(per_intent)
        .select("text", category="intent")
    )


def _checks(result) -> dict:
    return {c.check_name: c for c in result.get_asset_check_evaluations()}


def _cli(database, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CLI), "--db", str(database), "changes", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_new_topic_is_emerging_in_the_table_the_check_and_the_cli(workspace):
    queries = banking_slice(12)  # 240 queries, 12 intents
    path = workspace.add_dataset("grow", queries, spec="label_column: category\n")
    first = workspace.materialize("grow", assets=TREE)
    check = _checks(first)["emerging_clusters"]
    assert check.passed and check.description.startswith("first clustering")
    part = Partition("grow", "default")
    with connect(workspace.database) as conn:
        report = changes(conn, part)
    assert set(report["event"]) == {"new"} and not report["emerging"].any()
    first_run = report["dagster_run_id"][0]

    alarms = _alarm_queries(21)  # 42 texts: 15% of the 282 after
    pl.concat([queries, alarms]).write_csv(path)
    second = workspace.materialize("grow", assets=TREE)
    second_run = second.run_id

    # the table: the clusters holding the alarm queries are emerging, no banking cluster is
    alarm_share = workspace.sql(
        "SELECT a.level_name, a.cluster_id, avg((t.ground_truth LIKE 'alarm%')::INT) AS alarm, "
        "count(*) AS texts FROM clustering.assignments a "
        "JOIN clustering.texts t USING (dataset, run_config, row_idx) GROUP BY ALL"
    )
    with connect(workspace.database) as conn:
        report = changes(conn, part).join(alarm_share, on=["level_name", "cluster_id"], how="left")
    assert report["dagster_run_id"].unique().to_list() == [second_run]
    assert report["previous_run_id"].unique().to_list() == [first_run]
    emerging = report.filter("emerging")
    fine = emerging.filter(pl.col("level_name") == "fine")
    assert fine.height >= 1 and (fine["alarm"] > 0.8).all(), emerging
    assert fine["size"].sum() >= 0.8 * alarms.height  # most alarm queries are in them
    assert (emerging["alarm"] > 0.5).all(), emerging  # no banking topic is flagged
    assert report["emerging"][0]  # emerging first
    kept = report.filter((pl.col("event") == "kept") & (pl.col("level_name") == "fine"))
    assert kept.height >= 6 and (kept["alarm"] == 0).all()

    # the asset check warns, naming the emerging clusters; the metadata shows them first
    check = _checks(second)["emerging_clusters"]
    assert not check.passed and check.severity.value == "WARN"
    named = check.metadata["clusters"].value
    for row in fine.iter_rows(named=True):
        assert (
            f"fine/{row['cluster_id']}" in named
            and f"fine/{row['cluster_id']}" in check.description
        )
    md = metadata(second, "cluster_levels")
    assert md["emerging_clusters"] == emerging.height and md["previous_run_id"] == first_run
    assert md["changes"].splitlines()[2].endswith("| emerging |")

    # the CLI: the same report as JSON, names from the tree, --since, --level, errors
    done = _cli(workspace.database, "grow", "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert {r["node_id"] for r in rows if r["emerging"]} == {
        f"{r['level_name']}/{r['cluster_id']}" for r in emerging.iter_rows(named=True)
    }
    assert all(r["name"] for r in rows if r["event"] != "vanished")
    assert (
        json.loads(_cli(workspace.database, "grow", "--since", first_run, "--json").stdout) == rows
    )
    short = _cli(workspace.database, "grow", "--since", first_run[:8], "--level", "fine", "--json")
    assert [r for r in rows if r["level_name"] == "fine"] == json.loads(short.stdout)
    assert (
        json.loads(_cli(workspace.database, "grow", "--since", second_run, "--json").stdout) == []
    )
    unknown = _cli(workspace.database, "grow", "--since", "nope")
    assert unknown.returncode == 1 and first_run in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1
    table = _cli(workspace.database, "grow")
    assert table.returncode == 0 and "emerging" in table.stdout and first_run[:8] in table.stdout
    assert f"fine/{fine['cluster_id'][0]}" in table.stdout

    # the size history of a kept cluster: one point per clustering
    with connect(workspace.database) as conn:
        history = size_history(conn, part, "fine", kept["cluster_id"][0])
        with pytest.raises(InputError, match="nope"):
            changes(conn, part, since_run="nope")
    assert history["dagster_run_id"].to_list() == [first_run, second_run]
    assert history["size"][1] == kept["size"][0]
    assert history["event"].to_list() == ["new", "kept"]
