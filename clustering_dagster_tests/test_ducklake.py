"""Results several machines can write: the store as a DuckLake (a catalog in a throwaway
PostgreSQL, Parquet files in a temporary folder) instead of the single DuckDB file, with the same
guarantees. Real runs of the README's command in separate processes: two partitions written and
published at the same moment, a reader reading all along (it never waits), a run killed with
kill -9 between its writes and its publication, and the CLI reading the lake. Skipped when the
`lake` extra is not installed (or its builds are for another duckdb), or PostgreSQL is missing."""

import json
import subprocess
import sys
import time

import duckdb
import pytest

from clustering_dagster.core.storage import store
from clustering_dagster.core.storage.lake import Lake, load_extension

from .support.faults import Sandbox, mismatches, sample_texts, step_start
from .support.paths import REPO
from .support.services import PostgresServer, ensure_installed

CONSISTENT = dict.fromkeys(
    ["assignment_text", "embedding_text", "text_unassigned", "cluster_label", "tree_label",
     "summary_cluster"], 0
)  # fmt: skip
BANK = sample_texts(0, 10)  # 200 queries each, no text in two datasets
CARD = sample_texts(10, 10)
BANK_NEW = sample_texts(20, 10)


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """A Sandbox whose results are a DuckLake: catalog in PostgreSQL, data in a local folder."""
    pytest.importorskip("duckdb_extension_ducklake", reason="pip install -e '.[lake]'")
    pytest.importorskip("duckdb_extension_postgres_scanner", reason="pip install -e '.[lake]'")
    try:
        load_extension(duckdb.connect(), "ducklake")
    except RuntimeError as err:  # the packages' builds are for another duckdb
        pytest.skip(str(err))
    missing = ensure_installed()
    if missing:
        pytest.skip(missing)
    root = tmp_path_factory.mktemp("ducklake")
    with PostgresServer() as pg:
        pg.create_database("lake")
        box = Sandbox(root)
        box.env |= {
            "CLUSTERING_DUCKLAKE": "postgres:" + pg.dsn("lake"),
            "CLUSTERING_DUCKLAKE_DATA": str(root / "lake_data"),
        }
        yield box


def _texts(box: Sandbox, partition: str) -> list[str]:
    return sorted(box.published_texts(partition)["text"])


def test_two_runs_on_two_partitions_write_and_publish_at_once(lake):
    lake.write_dataset("bank", BANK)
    lake.write_dataset("card", CARD)
    assert lake.register().returncode == 0
    runs = {p: lake.start(p) for p in ("bank|default", "card|default")}
    seen = {p: set() for p in runs}
    while any(run.process.poll() is None for run in runs.values()):
        for partition in runs:  # a reader while both write: nothing yet, or all of it
            try:
                seen[partition].add(len(_texts(lake, partition)))
                assert mismatches(lake, partition) == CONSISTENT
            except duckdb.CatalogException:  # before the first run made the lake's tables
                seen[partition].add(0)
        time.sleep(1)
    for partition, run in runs.items():
        assert run.finish(), run.output[-3000:]
        assert seen[partition] <= {0, 200}
    assert _texts(lake, "bank|default") == sorted(BANK["text"])
    assert _texts(lake, "card|default") == sorted(CARD["text"])
    for partition in runs:
        assert mismatches(lake, partition) == CONSISTENT
    published = lake.read("SELECT DISTINCT dataset, version FROM clustering.publications")
    assert sorted(published["dataset"]) == ["bank", "card"]
    # the vector store holds each text once, though both runs wrote to it at once
    twice = lake.read(
        "SELECT count(*) AS n FROM (SELECT model, text_hash FROM clustering.embedding_store_384 "
        "GROUP BY ALL HAVING count(*) > 1)"
    )
    assert twice["n"][0] == 0
    # and they are in the lake, not in a DuckDB file
    assert not lake.database.exists()
    assert list((lake.root / "lake_data").rglob("*.parquet"))


def test_a_run_killed_mid_write_leaves_the_previous_snapshot(lake):
    lake.write_dataset("bank", BANK_NEW)
    killed = lake.start("bank|default")
    assert killed.wait_for(step_start("cluster_labels")) is not None, killed.output[-3000:]
    killed.kill()  # texts, vectors, projection and levels written under its version, unpublished
    written = lake.read(
        "SELECT count(*) AS n FROM clustering_store.texts WHERE version = ?", [killed.run_id]
    )
    assert written["n"][0] == BANK_NEW.height
    assert _texts(lake, "bank|default") == sorted(BANK["text"])
    assert mismatches(lake, "bank|default") == CONSISTENT
    assert _texts(lake, "card|default") == sorted(CARD["text"])

    again = lake.start("bank|default")
    assert again.finish(), again.output[-3000:]
    assert _texts(lake, "bank|default") == sorted(BANK_NEW["text"])
    assert mismatches(lake, "bank|default") == CONSISTENT


def test_the_cli_reads_the_lake(lake):
    """`clustering-dagster tree` with the lake's settings: the published tree, from the lake."""
    done = subprocess.run(
        [sys.executable, "-m", "clustering_dagster.cli", "tree", "card", "--json"],
        env=lake.env, cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    nodes = json.loads(done.stdout)
    hierarchy = lake.read(
        "SELECT node_id, label FROM clustering.hierarchy WHERE dataset = 'card' "
        "AND run_config = 'default'"
    )
    assert hierarchy.height > 0
    assert {(n["node_id"], n["name"]) for n in nodes} == set(hierarchy.iter_rows())


def test_a_conflicting_transaction_runs_again_whole(tmp_path, monkeypatch):
    """What a conflict with another writer's commit does (a DuckDB file stands in for the lake):
    the first attempt's writes are rolled back and `write` runs again from the start."""
    monkeypatch.setattr(store, "CONFLICT_PAUSE_S", (0.001, 0.001))
    conn = duckdb.connect(str(tmp_path / "x.duckdb"))
    conn.execute("CREATE TABLE t (attempt INTEGER)")
    attempts = []

    def write():
        attempts.append(len(attempts) + 1)
        conn.execute("INSERT INTO t VALUES (?)", [attempts[-1]])
        if len(attempts) < 3:
            raise duckdb.TransactionException("Transaction conflict (as DuckLake's COMMIT)")
        return "done"

    assert store.in_transaction(conn, write) == "done"
    assert conn.execute("SELECT attempt FROM t").fetchall() == [(3,)]
    monkeypatch.setattr(store, "CONFLICT_TRIES", 2)
    attempts.clear()
    with pytest.raises(duckdb.TransactionException):  # bounded: the conflict is raised
        store.in_transaction(conn, write)
    assert conn.execute("SELECT attempt FROM t").fetchall() == [(3,)]
    with pytest.raises(ValueError):  # anything else: rolled back, not run again
        store.in_transaction(conn, lambda: [conn.execute("DELETE FROM t"), int("x")])
    assert conn.execute("SELECT attempt FROM t").fetchall() == [(3,)]


def test_unset_means_the_file():
    assert Lake.configured({}) is None
    with pytest.raises(ValueError, match="CLUSTERING_DUCKLAKE_DATA"):
        Lake.configured({"CLUSTERING_DUCKLAKE": "postgres:dbname=x"})
