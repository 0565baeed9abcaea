"""Versions and publication on a real DuckDB file: what readers see before, during and after a
run, what a partial run withdraws, what a publication cleans up."""

import polars as pl
import pytest

from clustering_dagster.core.storage.snapshots import downstream, mark_written, publish_if_complete
from clustering_dagster.core.storage.store import (
    LAYOUT,
    MissingResult,
    Partition,
    _view,
    connect,
    ensure_schema,
    read_partition,
    transaction,
    write_aliases,
    write_version,
)


@pytest.fixture
def conn(tmp_path):
    with connect(tmp_path / "s.duckdb") as conn:
        ensure_schema(conn)
        yield conn


def _texts(*words: str) -> pl.DataFrame:
    return pl.DataFrame(
        {"row_idx": range(len(words)), "text": words, "text_hash": [w[::-1] for w in words]},
        schema_overrides={"row_idx": pl.Int32},
    )


def _run(conn, run_id: str, writes: dict[str, dict[str, pl.DataFrame]], live=frozenset()):
    """A run of the assets in `writes` (asset -> tables), writing in that order."""
    part = Partition("d", "c", run_id)
    published = None
    for asset, tables in writes.items():
        with transaction(conn):
            for table, frame in tables.items():
                write_version(conn, table, part, frame)
            mark_written(conn, part, asset, list(tables))
            published = publish_if_complete(conn, part, set(writes), set(live))
    return published


def _visible(conn, table: str) -> pl.DataFrame:
    """What a reader sees: the view of schema `clustering`."""
    return conn.execute(f"SELECT * FROM clustering.{table}").pl()


def test_readers_see_nothing_of_a_run_until_its_last_asset_publishes(conn):
    part = Partition("d", "c", "run1")
    with transaction(conn):
        write_version(conn, "texts", part, _texts("a", "b"))
        mark_written(conn, part, "raw_texts", ["texts"])
        assert publish_if_complete(conn, part, {"raw_texts", "embeddings"}, set()) is None
    assert _visible(conn, "texts").is_empty()
    # the run itself reads what it wrote; another run, or no run, reads the published version
    assert read_partition(conn, "texts", part, "text", "row_idx")["text"].to_list() == ["a", "b"]
    with pytest.raises(
        MissingResult, match="partition d|c has no texts yet: materialise raw_texts"
    ):
        read_partition(conn, "texts", Partition("d", "c", "run2"), "text", "row_idx")
    embeddings = pl.DataFrame(
        {"row_idx": [0, 1], "text_hash": ["a", "b"], "model": "m", "dim": 4},
        schema_overrides={"row_idx": pl.Int32, "dim": pl.Int32},
    )
    with transaction(conn):
        write_version(conn, "embeddings", part, embeddings)
        mark_written(conn, part, "embeddings", ["embeddings"])
        published = publish_if_complete(conn, part, {"raw_texts", "embeddings"}, set())
    assert published.tables == ["embeddings", "texts"] and published.withdrawn == []
    assert _visible(conn, "texts")["text"].to_list() == ["a", "b"]


def test_a_partial_run_withdraws_what_was_computed_from_the_inputs_it_replaced(conn):
    assignments = pl.DataFrame(
        {"row_idx": [0], "text_hash": ["a"], "level": 0, "level_name": "fine", "cluster_id": 0,
         "membership": 1.0, "noise": False, "moved_to_nest": False},
        schema_overrides={"row_idx": pl.Int32, "level": pl.Int32, "cluster_id": pl.Int32},
    )  # fmt: skip
    _run(
        conn, "full", {"raw_texts": {"texts": _texts("a")}, "levels": {"assignments": assignments}}
    )
    assert _visible(conn, "assignments").height == 1
    published = _run(conn, "texts_only", {"raw_texts": {"texts": _texts("z")}})
    assert published.withdrawn == ["assignments"]  # old clusters of other texts: not shown
    assert _visible(conn, "texts")["text"].to_list() == ["z"]
    assert _visible(conn, "assignments").is_empty()
    assert "hierarchy" in downstream({"texts"}) and "texts" not in downstream({"texts"})


def test_a_publication_deletes_dead_versions_and_keeps_live_ones(conn):
    _run(conn, "one", {"raw_texts": {"texts": _texts("a")}})
    dead = Partition("d", "c", "dead")
    live = Partition("d", "c", "live")
    with transaction(conn):
        for part in (dead, live):
            write_version(conn, "texts", part, _texts("x"))
            mark_written(conn, part, "raw_texts", ["texts"])
    _run(conn, "two", {"raw_texts": {"texts": _texts("b")}}, live={"live"})
    versions = conn.execute(
        "SELECT DISTINCT version FROM clustering_store.texts ORDER BY version"
    ).fetchall()
    assert versions == [("live",), ("two",)]  # 'one' is superseded, 'dead' will never publish
    staged = conn.execute("SELECT DISTINCT version FROM clustering_store.staged").fetchall()
    assert staged == [("live",)]


def test_aliases_of_other_runs_are_carried_into_the_new_version(conn):
    def summaries(alias: str, title: str) -> pl.DataFrame:
        return pl.DataFrame(
            {"alias": [alias], "level_name": ["fine"], "cluster_id": [0], "size": [3],
             "title": [title], "summary": ["s"], "labeler": ["x"], "fallback": [False],
             "settings_hash": ["h"]},
            schema_overrides={"cluster_id": pl.Int32},
        )  # fmt: skip

    _run(conn, "a", {"cluster_summaries": {"cluster_summaries": summaries("gpt", "old")}})
    part = Partition("d", "c", "b")
    with transaction(conn):
        write_aliases(conn, "cluster_summaries", part, summaries("llama", "new"))
        mark_written(conn, part, "cluster_summaries", ["cluster_summaries"])
        publish_if_complete(conn, part, {"cluster_summaries"}, set())
    rows = conn.execute(
        "SELECT alias, title FROM clustering.cluster_summaries ORDER BY alias"
    ).fetchall()
    assert rows == [("gpt", "old"), ("llama", "new")]


def test_a_file_of_the_unversioned_layout_is_migrated_with_nothing_lost(tmp_path):
    path = tmp_path / "old.duckdb"
    with connect(path) as conn:
        conn.execute("CREATE SCHEMA clustering")
        conn.execute(
            "CREATE TABLE clustering.texts (dataset VARCHAR, run_config VARCHAR, row_idx INTEGER, "
            "text_id VARCHAR, text VARCHAR, text_hash VARCHAR, duplicate_of INTEGER, "
            "source_file VARCHAR, ground_truth VARCHAR, metadata JSON)"
        )
        conn.execute("INSERT INTO clustering.texts VALUES ('d', 'c', 0, 'i', 'kept', 'h', NULL, "
                     "'f', NULL, NULL)")  # fmt: skip
        ensure_schema(conn)
        assert _visible(conn, "texts")["text"].to_list() == ["kept"]
        part = Partition("d", "c", "next")
        assert read_partition(conn, "texts", part, "text", "row_idx")["text"].to_list() == ["kept"]


def test_a_file_of_layout_2_gains_the_projections_fitted_column(tmp_path):
    with connect(tmp_path / "layout2.duckdb") as conn:
        ensure_schema(conn)
        conn.execute("DROP VIEW clustering.projections")  # as layout 2 made them:
        conn.execute("ALTER TABLE clustering_store.projections DROP COLUMN fitted")
        conn.execute(_view("projections"))
        conn.execute("UPDATE clustering.layout SET version = 2")
        conn.execute("INSERT INTO clustering_store.projections VALUES ('d', 'c', 'v', 0, [1.0, "
                     "2.0], 0.5, 0.5, 'h')")  # fmt: skip
        ensure_schema(conn)
        rows = conn.execute("SELECT row_idx, fitted FROM clustering_store.projections").fetchall()
        assert rows == [(0, True)]  # written before the column: counted as fitted
        columns = conn.execute("SELECT * FROM clustering.projections LIMIT 0").description
        assert "fitted" in [c[0] for c in columns]
        assert conn.execute("SELECT max(version) FROM clustering.layout").fetchone()[0] == LAYOUT
