"""Real Dagster materialisations over real Banking77 queries with the real MiniLM model."""

import polars as pl
import pytest
from dagster import DagsterInstance

from clustering_dagster.assets import (
    ALL_ASSETS,
    cluster_hierarchy,
    cluster_labels,
    cluster_levels,
    projections,
)
from clustering_dagster.cli import register

from .support.paths import SAMPLE
from .support.workspace import banking_slice, metadata

CLUSTERED = [cluster_levels, cluster_labels, cluster_hierarchy]
LABELLED = "label_column: category\n"


def test_full_pipeline_produces_a_checked_named_hierarchy(workspace):
    queries = banking_slice()
    workspace.add_dataset("Bank Queries", queries, spec=LABELLED)
    result = workspace.materialize("bank_queries")
    assert result.success
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["every_text_assigned"].passed and checks["levels_nested"].passed
    agreement = {k: v.value for k, v in checks["ground_truth_agreement"].metadata.items()}
    assert agreement["best_nmi"] > 0.6 and checks["ground_truth_agreement"].passed

    texts = workspace.sql("SELECT * FROM clustering.texts WHERE dataset = 'bank_queries'")
    assert texts.height == queries.height and set(texts["run_config"]) == {"default"}
    per_level = workspace.sql(
        "SELECT level_name, count(*) AS n, count(DISTINCT cluster_id) AS k "
        "FROM clustering.assignments GROUP BY level_name ORDER BY min(level)"
    )
    names = per_level["level_name"].to_list()
    assert names[0] == "coarse" and names[-1] == "fine" and len(names) >= 2
    assert per_level["n"].to_list() == [queries.height] * len(names)
    assert per_level["k"].to_list() == sorted(per_level["k"].to_list())

    tree = workspace.sql("SELECT * FROM clustering.hierarchy ORDER BY position")
    nodes = set(tree["node_id"])
    assert all(p is None or p in nodes for p in tree["parent_id"])
    roots = tree.filter(pl.col("parent_id").is_null())
    assert roots["size"].sum() == queries.height
    assert tree["label"].str.len_chars().min() > 0
    labels = workspace.sql("SELECT * FROM clustering.cluster_labels WHERE level_name = 'fine'")
    assert labels["keywords"].list.len().min() > 0 and labels["examples"].list.len().min() > 0

    vectors = workspace.sql(
        "SELECT s.embedding FROM clustering.embeddings e JOIN clustering.embedding_store_384 s "
        "USING (model, text_hash)"
    )
    assert vectors.height == queries.height
    recorded = workspace.sql("SELECT asset, params_hash, params FROM clustering.materializations")
    assert recorded.height == len(ALL_ASSETS) and recorded["params_hash"].n_unique() == 1

    md = metadata(result, "cluster_levels")
    assert "| fine | hdbscan |" in md["levels"] and "| coarse | merge |" in md["levels"]
    assert metadata(result, "cluster_hierarchy")["map"].startswith("![map](data:image/png;base64,")
    assert metadata(result, "embeddings")["newly_embedded"] == queries.height


def test_rerun_embeds_only_new_texts_and_reuses_unchanged_projections(workspace):
    queries = banking_slice(6)
    path = workspace.add_dataset("grow", queries)
    workspace.materialize("grow")
    grown = pl.concat(
        [queries, banking_slice(8).filter(~pl.col("text").is_in(queries["text"].implode()))]
    )
    grown.write_csv(path)
    result = workspace.materialize("grow")
    embedded = metadata(result, "embeddings")
    assert embedded["newly_embedded"] == grown.height - queries.height
    assert embedded["from_cache"] == queries.height
    assert metadata(result, "projections")["method"] == "umap"  # the texts changed

    # only the levels change, not UMAP's `auto` neighbourhood (the finest level's size: 5 of
    # 160 texts, so 10 neighbours; KMeans k 16: 10 texts per cluster, 10): the projection is
    # reused, the clustering is redone
    workspace.write_configs("default:\n  levels:\n    - {name: only, method: kmeans, k: 16}\n")
    result = workspace.materialize("grow", assets=[projections, *CLUSTERED])
    assert metadata(result, "projections")["method"] == "reused from grow|default"
    assert workspace.sql("SELECT DISTINCT level_name FROM clustering.assignments")[
        "level_name"
    ].to_list() == ["only"]
    # clusters of 40 texts (k 4) widen the neighbourhood to its most, 30: projected again
    workspace.write_configs("default:\n  levels:\n    - {name: only, method: kmeans, k: 4}\n")
    result = workspace.materialize("grow", assets=[projections, *CLUSTERED])
    assert metadata(result, "projections")["method"] == "umap"
    assert metadata(result, "projections")["n_neighbors"] == 30


def test_bad_input_fails_clearly_and_keeps_the_previous_result(workspace):
    queries = banking_slice(4)
    path = workspace.add_dataset("d", queries)
    workspace.materialize("d")
    before = workspace.sql("SELECT * FROM clustering.texts ORDER BY row_idx")

    path.write_text("body\nno text column here\n")
    result = workspace.materialize("d", raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error.to_string()
    assert "d.csv: no column 'text' (text_column)" in failure
    assert workspace.sql("SELECT * FROM clustering.texts ORDER BY row_idx").equals(before)
    assert workspace.sql("SELECT count(*) AS n FROM clustering.hierarchy")["n"][0] > 0


@pytest.mark.parametrize(
    ("name", "texts"),
    [
        ("one_row", ["just one question about my card"]),
        ("identical", ["same question again"] * 40),
        ("two_kinds", ["card arrived?"] * 20 + ["exchange rate?"] * 20),
    ],
)
def test_degenerate_datasets_give_a_sane_result(workspace, name, texts):
    workspace.add_dataset(name, pl.DataFrame({"text": texts}))
    result = workspace.materialize(name)
    assert result.success
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {
        "every_text_assigned": True,
        "levels_nested": True,
        "ground_truth_agreement": True,
        "privacy_threshold": True,
        "emerging_clusters": True,  # a first clustering: nothing to compare with
    }
    fine = workspace.sql("SELECT cluster_id FROM clustering.assignments WHERE level_name = 'fine'")
    assert fine.height == len(texts)
    assert fine["cluster_id"].n_unique() <= len(set(texts))
    assert metadata(result, "embeddings")["newly_embedded"] == len(set(texts))


def test_register_adds_every_shipped_dataset_once(tmp_path):
    # not `with DagsterInstance...`: dagster 1.13.27's __exit__ leaves a dead instance in a
    # context variable that later Definitions loads in this process trip over
    instance = DagsterInstance.ephemeral()
    added, keys, problems = register(instance, SAMPLE.parent)
    assert "banking77_sample" in added and added == keys and problems == []
    assert register(instance, SAMPLE.parent)[0] == []
    assert "banking77_sample" in instance.get_dynamic_partitions("dataset")


def test_definitions_load_with_partitions_and_no_pool():
    from clustering_dagster.definitions import defs

    job = defs.resolve_job_def("cluster_texts")
    assert job.partitions_def.partitions_defs[1].partitions_def.get_partition_keys() == [
        "default",
        "kmeans",
        "llm_example",
        "private",
    ]
    for asset in ALL_ASSETS:
        assert asset.op.pool is None  # a dead run must hold no slot: writers wait on the file
