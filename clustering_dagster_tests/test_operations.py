"""The operational side: stable ids and lineage, the dataset sensor, the nightly schedule,
incremental assignment, and concurrent runs on one DuckDB file."""

import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime

import numpy as np
import polars as pl
from dagster import DagsterInstance, SkipReason, build_schedule_context, build_sensor_context

from clustering_dagster.assets import incremental_assignments
from clustering_dagster.automation import dataset_folder_sensor, nightly_reclustering
from clustering_dagster.core.clustering.lineage import Previous, match_clusters
from clustering_dagster.core.config.operations import LastRun, folder_changes, recluster_reason
from clustering_dagster.core.data_in.datasets import scan_datasets
from clustering_dagster.resources import ClusteringSettings

from .support.paths import REPO
from .support.workspace import banking_slice, metadata


def _previous(ids, hashes=None, centroids=None):
    ids = np.array(ids)
    hashes = np.array(hashes if hashes is not None else [f"t{i}" for i in range(len(ids))])
    return Previous(hashes, ids, centroids or {}, next_id=int(ids.max()) + 1)


def _events(matching):
    return sorted(
        matching.lineage.select("cluster_id", "previous_cluster_id", "event").rows(), key=str
    )


def test_unchanged_clusters_keep_their_ids_whatever_the_new_numbering():
    previous = _previous([7, 7, 7, 3, 3, 3])
    new = np.array([1, 1, 1, 0, 0, 0])
    matching = match_clusters(new, np.array([f"t{i}" for i in range(6)]), None, previous)
    assert matching.stable_ids.tolist() == [3, 7]
    assert _events(matching) == [(3, 3, "kept"), (7, 7, "kept")]


def test_split_merge_new_and_vanished_are_recorded():
    # previous: A=0 (6 texts), B=1 (2 texts), C=2 (2 texts), D=3 (2 texts)
    previous = _previous([0] * 6 + [1] * 2 + [2] * 2 + [3] * 2)
    hashes = np.array([f"t{i}" for i in range(12)] + ["n0", "n1", "n2"])
    # new: A split in two (4 + 2), B and C merged, D gone (its texts spread), three new texts
    new = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 0, 1, 3, 3, 3])
    matching = match_clusters(new, hashes, None, previous)
    ids = dict(enumerate(matching.stable_ids.tolist()))
    assert ids[0] == 0  # the larger part of A keeps A's id
    assert ids[1] >= 4 and ids[2] >= 4 and ids[3] >= 4  # fresh ids, never reused ones
    events = _events(matching)
    assert (0, 0, "kept") in events
    assert (ids[1], 0, "split") in events
    assert (ids[2], 1, "merged") in events and (ids[2], 2, "merged") in events
    assert (ids[3], None, "new") in events
    d_rows = [e for e in events if e[1] == 3]
    assert all(e[2] in {"split", "merged", "vanished"} for e in d_rows) and d_rows


def test_a_cluster_of_new_texts_keeps_the_id_of_a_cluster_with_the_same_centroid():
    previous = _previous([5, 5], centroids={5: np.array([1.0, 0.0]), 6: np.array([0.0, 1.0])})
    new = np.array([0, 0, 0])
    vectors = np.array([[0.0, 1.0], [0.1, 1.0], [0.0, 0.9]])  # all new texts, close to cluster 6
    matching = match_clusters(new, np.array(["a", "b", "c"]), vectors, previous)
    assert matching.stable_ids.tolist() == [6]
    assert (6, 6, "kept") in _events(matching) and (None, 5, "vanished") in _events(matching)


def test_folder_changes_hash_only_what_changed(tmp_path):
    (tmp_path / "a.csv").write_text("text\nx\n")
    (tmp_path / "b.csv").write_text("text\ny\n")
    first = folder_changes(scan_datasets(tmp_path)[0], {})
    assert first.new == ["a", "b"] and first.changed == first.removed == []
    (tmp_path / "a.csv").write_text("text\nx\nz\n")
    os.utime(tmp_path / "b.csv", ns=(1, 1))  # touched, same content
    (tmp_path / "c.csv").write_text("text\nw\n")
    second = folder_changes(scan_datasets(tmp_path)[0], first.cursor)
    assert (second.new, second.changed) == (["c"], ["a"])
    (tmp_path / "b.csv").unlink()
    assert folder_changes(scan_datasets(tmp_path)[0], second.cursor).removed == ["b"]


def test_recluster_reasons():
    fresh = LastRun("s", "p", ingested_at=1.0, clustered_at=2.0)
    assert recluster_reason("s", "p", fresh) is None
    assert recluster_reason("s", "p", LastRun()) == "never clustered"
    assert recluster_reason("s2", "p", fresh) == "dataset files changed"
    assert recluster_reason("s", "p2", fresh) == "run configuration changed"
    stuck = LastRun("s", "p", ingested_at=3.0, clustered_at=2.0)
    assert recluster_reason("s", "p", stuck) == "the last run did not reach the hierarchy"


def _settings(workspace):
    return ClusteringSettings(
        datasets_dir=str(workspace.datasets), run_configs_path=str(workspace.configs)
    )


def _sense(workspace, cursor=None):
    context = build_sensor_context(
        instance=workspace.instance,
        cursor=cursor,
        resources={"clustering": _settings(workspace)},
    )
    return dataset_folder_sensor(context), context


def _requests(result):
    return sorted((r.job_name, r.partition_key) for r in result.run_requests)


def test_sensor_registers_new_files_and_reacts_to_changes(workspace):
    path = workspace.add_dataset("Support Tickets", banking_slice(4))
    result, _ = _sense(workspace)
    assert result.dynamic_partitions_requests[0].partition_keys == ["support_tickets"]
    assert _requests(result) == [("cluster_texts", "support_tickets|default")]  # kmeans: inactive
    cursor = result.cursor

    again, _ = _sense(workspace, cursor)
    assert again.skip_reason.skip_message == "no new or changed dataset files"

    # clustered, then texts appended: the sensor asks for the incremental assignment
    workspace.materialize("support_tickets")
    grown = pl.concat([banking_slice(4), banking_slice(6).tail(5)])
    grown.write_csv(path)
    changed, _ = _sense(workspace, cursor)
    assert _requests(changed) == [("assign_new_texts", "support_tickets|default")]
    assert not changed.dynamic_partitions_requests

    # a second file with the same key is an error, not an overwrite
    clashing = workspace.add_dataset("support-tickets", banking_slice(2), suffix=".jsonl")
    clash, _ = _sense(workspace, changed.cursor)
    assert clash.run_requests == [] and not clash.dynamic_partitions_requests

    # removed files are reported; the partition and its results stay
    path.unlink()
    clashing.unlink()
    gone, _ = _sense(workspace, clash.cursor)
    assert gone.run_requests == [] and json.loads(gone.cursor) == {}
    assert "support_tickets" in workspace.instance.get_dynamic_partitions("dataset")
    assert workspace.sql("SELECT count(*) AS n FROM clustering.texts")["n"][0] == 80


def test_sensor_reports_bad_entries_and_runs_the_good_ones(workspace, capfd):
    workspace.add_dataset("good", banking_slice(2))
    workspace.add_dataset("数据", banking_slice(2))
    workspace.add_dataset("typo", banking_slice(2), spec="text_colum: text\n")
    workspace.write_configs(
        (REPO / "data" / "run_configs.yaml").read_text() + "\nbroken: {levels: []}\n"
    )
    result, _ = _sense(workspace)
    assert result.dynamic_partitions_requests[0].partition_keys == ["good"]
    assert _requests(result) == [("cluster_texts", "good|default")]
    logged = capfd.readouterr().err  # the sensor's log
    assert "cannot make a dataset key" in logged and "unknown setting 'text_colum'" in logged
    assert "run configuration 'broken' is invalid" in logged


def test_sensor_does_not_rerun_a_dataset_clustered_from_the_same_files(workspace):
    workspace.add_dataset("known", banking_slice(4))
    workspace.materialize("known")
    result, _ = _sense(workspace)  # a fresh cursor, e.g. after the daemon restarted
    assert _requests(result) == []


def _nightly(workspace):
    # `with`: the context opens its own instance, which must not outlive the evaluation
    with build_schedule_context(
        instance=workspace.instance,
        resources={"clustering": _settings(workspace)},
        scheduled_execution_time=datetime(2026, 11, 22, 2, tzinfo=UTC),
    ) as context:
        return nightly_reclustering(context)


def test_nightly_schedule_reclusters_only_what_changed(workspace):
    a = workspace.add_dataset("a", banking_slice(4))
    workspace.add_dataset("b", banking_slice(3))
    workspace.materialize("a")
    workspace.instance.add_dynamic_partitions("dataset", ["b"])
    runs = _nightly(workspace)
    assert [(r.partition_key, r.tags["clustering/reason"]) for r in runs] == [
        ("b|default", "never clustered")
    ]
    workspace.materialize("b")
    skipped = _nightly(workspace)
    assert isinstance(skipped, SkipReason)
    assert "a|default: unchanged since its last clustering" in skipped.skip_message
    pl.concat([banking_slice(4), banking_slice(5).tail(3)]).write_csv(a)
    runs = _nightly(workspace)
    assert [(r.partition_key, r.tags["clustering/reason"]) for r in runs] == [
        ("a|default", "dataset files changed")
    ]
    workspace.write_configs(
        (REPO / "data" / "run_configs.yaml")
        .read_text()
        .replace("max_branching: 5", "max_branching: 6")
    )
    runs = _nightly(workspace)
    assert {r.tags["clustering/reason"] for r in runs} == {"run configuration changed"}


def test_appended_texts_are_assigned_then_reclustering_keeps_matching_ids(workspace):
    queries = banking_slice(8)
    path = workspace.add_dataset("grow", queries, spec="label_column: category\n")
    workspace.materialize("grow")
    before = workspace.sql("SELECT text_hash, level_name, cluster_id FROM clustering.assignments")

    appended = pl.DataFrame(
        {
            "text": [
                "How do I activate the new card that just came in the post?",
                "What is the best recipe for a chocolate cake with strawberries?",
            ],
            "category": ["activate_my_card", None],
        }
    )
    pl.concat([queries, appended]).write_csv(path)
    result = workspace.materialize("grow", assets=[incremental_assignments])
    md = metadata(result, "incremental_assignments")
    assert md["appended_texts"] == 2 and md["removed_since_clustering"] == 0
    rows = workspace.sql("SELECT * FROM clustering.incremental_assignments ORDER BY text, level")
    assert rows.height == 2 * before["level_name"].n_unique()
    fine = rows.filter(pl.col("level_name") == "fine")
    card = fine.filter(pl.col("text").str.contains("activate")).row(0, named=True)
    cake = fine.filter(pl.col("text").str.contains("cake")).row(0, named=True)
    home = before.join(
        workspace.sql("SELECT text_hash, ground_truth FROM clustering.texts"), on="text_hash"
    ).filter((pl.col("level_name") == "fine") & (pl.col("ground_truth") == "activate_my_card"))
    assert card["cluster_id"] == home["cluster_id"].mode()[0]  # where its own intent lives
    assert card["confidence"] > 0.5 > cake["confidence"] or not cake["fits"]
    assert not cake["fits"]  # fits no banking cluster
    assert md["outlier_share"] == (~fine["fits"]).mean()
    # the coarser levels hold the fine cluster's ancestors: still nested
    parents = before.pivot("level_name", index="text_hash", values="cluster_id")
    for text in ("activate", "cake"):
        chain = rows.filter(pl.col("text").str.contains(text)).sort("level")
        names, ids = chain["level_name"].to_list(), chain["cluster_id"].to_list()
        siblings = parents.filter(pl.col("fine") == ids[-1])
        assert siblings.height == 0 or [siblings[n][0] for n in names[:-1]] == ids[:-1]

    workspace.materialize("grow")  # the full re-clustering
    after = workspace.sql("SELECT text_hash, level_name, cluster_id FROM clustering.assignments")
    same = before.join(after, on=["text_hash", "level_name"], suffix="_after")
    kept = (same["cluster_id"] == same["cluster_id_after"]).mean()
    assert kept > 0.6, f"only {kept:.0%} of texts kept their cluster id"
    lineage = workspace.sql("SELECT * FROM clustering.cluster_lineage")
    runs = lineage["dagster_run_id"].unique().to_list()
    assert len(runs) == 2
    second = lineage.filter(pl.col("recorded_at") == pl.col("recorded_at").max())
    assert "kept" in second["event"].to_list()
    assert set(second["event"]) <= {"kept", "split", "merged", "new", "vanished"}
    assert (
        workspace.sql("SELECT count(*) AS n FROM clustering.incremental_assignments")["n"][0] == 0
    )
    stages = workspace.sql("SELECT * FROM clustering.runs ORDER BY first_materialized_at")
    assert stages.height == 3 and stages["code_version"].str.starts_with("0.1.0").all()


CONCURRENT_RUN = textwrap.dedent("""
    import sys
    from dagster import DagsterInstance, materialize
    from clustering_dagster.assets import ALL_ASSETS
    from clustering_dagster.partitions import partition_key
    from clustering_dagster.resources import ClusteringSettings, DuckDBStore

    database, datasets, dataset = sys.argv[1:]
    with DagsterInstance.get() as instance:
        result = materialize(
            ALL_ASSETS, instance=instance, partition_key=partition_key(dataset, "default"),
            resources={"duckdb": DuckDBStore(database=database),
                       "clustering": ClusteringSettings(datasets_dir=datasets)},
        )
    print("SUCCESS" if result.success else "FAILURE")
""")


def test_two_runs_at_once_on_one_duckdb_file_both_succeed(workspace, tmp_path):
    home = tmp_path / "shared_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster_home" / "dagster.yaml").read_text())
    workspace.add_dataset("first", banking_slice(3))
    workspace.add_dataset("second", banking_slice(5).tail(40))
    instance = DagsterInstance.from_config(
        str(home)
    )  # no `with`: see test_pipeline's register test
    instance.add_dynamic_partitions("dataset", ["first", "second"])
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                CONCURRENT_RUN,
                str(workspace.database),
                str(workspace.datasets),
                name,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("first", "second")
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for out, err in outputs:
        assert out.strip().endswith("SUCCESS"), err[-3000:]
    counts = workspace.sql(
        "SELECT dataset, count(*) AS n FROM clustering.hierarchy GROUP BY ALL ORDER BY dataset"
    )
    assert counts["dataset"].to_list() == ["first", "second"] and counts["n"].min() > 0
