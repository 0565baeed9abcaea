"""Semantic search through the terminal: the query embedded by the partition's own model (the real
MiniLM), ranked in DuckDB against stored text vectors, cluster centroids and LLM descriptions."""

import json

import polars as pl
import pytest

from clustering_dagster.core.results.reading import read_only
from clustering_dagster.core.results.search import QueryEncoder, Searcher, search_clusters
from clustering_dagster.core.storage.store import Partition

from .support.explored import DATASET, LLM_CONFIG, explored_database


@pytest.fixture(scope="session")
def explored(tmp_path_factory):
    return explored_database(tmp_path_factory)


def intent_cluster(explored, intent: str) -> str:
    """The fine cluster holding most of an intent's queries."""
    return explored.workspace.sql(
        "SELECT 'fine/' || a.cluster_id AS node_id, count(*) AS n FROM clustering.assignments a "
        "JOIN clustering.texts t USING (dataset, run_config, row_idx) "
        "WHERE a.dataset = ? AND a.run_config = 'default' AND a.level_name = 'fine' "
        "AND t.ground_truth = ? GROUP BY ALL ORDER BY n DESC LIMIT 1",
        [DATASET, intent],
    )["node_id"][0]


def intent_clusters(explored, intent: str) -> set[str]:
    """The fine clusters holding at least a quarter of an intent's queries (an intent can be split
    over two clusters, and UMAP does not always split it the same way)."""
    return set(
        explored.workspace.sql(
            "SELECT 'fine/' || a.cluster_id AS node_id FROM clustering.assignments a "
            "JOIN clustering.texts t USING (dataset, run_config, row_idx) "
            "WHERE a.dataset = ? AND a.run_config = 'default' AND a.level_name = 'fine' "
            "AND t.ground_truth = ? GROUP BY ALL "
            "HAVING count(*) >= 0.25 * (SELECT count(*) FROM clustering.texts "
            "WHERE dataset = ? AND run_config = 'default' AND ground_truth = ?)",
            [DATASET, intent, DATASET, intent],
        )["node_id"]
    )


PARAPHRASES = {
    "age_limit": "Is there a minimum age before I can sign up for an account?",
    "cancel_transfer": "I sent money to the wrong person, can I still stop that payment?",
}


def test_paraphrases_find_their_intents_cluster_in_the_top_three(explored):
    # one process answers both, one query per line on stdin, one JSON object per line
    done = explored.run(
        "search", "-", "-d", DATASET, "--clusters", "-n", "3", "--json",
        stdin="\n".join(PARAPHRASES.values()) + "\n",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert [a["query"] for a in answers] == list(PARAPHRASES.values())
    for intent, found in zip(PARAPHRASES, answers, strict=True):
        assert set(found) == {"query", "clusters"} and len(found["clusters"]) == 3
        assert intent_clusters(explored, intent) & {hit["node_id"] for hit in found["clusters"]}
        scores = [hit["score"] for hit in found["clusters"]]
        assert scores == sorted(scores, reverse=True)


def test_text_search_within_a_cluster_stays_inside_it(explored):
    fine = intent_cluster(explored, "automatic_top_up")
    tree = explored.workspace.sql(
        "SELECT node_id, parent_id FROM clustering.hierarchy "
        "WHERE dataset = ? AND run_config = 'default'",
        [DATASET],
    )
    parent_of = dict(zip(tree["node_id"], tree["parent_id"], strict=True))
    path = [fine]  # the fine cluster's ancestors up to the top: search within the top one
    while parent_of[path[0]] is not None:
        path.insert(0, parent_of[path[0]])
    coarse = path[0]
    found = explored.json("search", "top up my balance by itself", "-d", DATASET, "--texts",
                          "--within", coarse, "-n", "5")  # fmt: skip
    assert set(found) == {"query", "texts"} and len(found["texts"]) == 5
    inside = {t["text"] for t in explored.json("texts", DATASET, coarse, "--limit", "0")}
    assert {hit["text"] for hit in found["texts"]} <= inside
    assert all(hit["clusters"][0]["node_id"] == coarse for hit in found["texts"])
    assert [len(hit["clusters"]) for hit in found["texts"]] == [len(path)] * 5


def test_search_over_every_partition_ranks_llm_titles_and_summaries(explored):
    found = explored.json("search", "my card is about to expire", "-n", "5")
    assert {hit["run_config"] for hit in found["texts"]} == {"default", LLM_CONFIG}
    assert found["texts"][0]["score"] >= found["texts"][-1]["score"]
    llm_hits = [hit for hit in found["clusters"] if hit["run_config"] == LLM_CONFIG]
    assert llm_hits and all(hit["matched_by"] for hit in llm_hits)
    table = explored.run("search", "my card is about to expire", "-d", DATASET, "-r", LLM_CONFIG)
    assert table.returncode == 0 and "clusters nearest" in table.stdout
    assert "texts nearest" in table.stdout


def test_an_index_is_read_once_and_embeds_only_descriptions_nobody_stored(explored):
    """The merged hierarchy stored the vectors of the titles and summaries it embedded; reading
    the index encodes only the others (the top level's), every node gets a centroid, and further
    queries reuse the index while nothing new is published."""
    encoded: list[str] = []

    class CountingEncoder(QueryEncoder):
        def __call__(self, config, texts):
            encoded.extend(texts)
            return super().__call__(config, texts)

    part = Partition(DATASET, LLM_CONFIG)
    searcher = Searcher(explored.database, CountingEncoder())
    index = searcher.index(part)
    described = index.tree.nodes.filter(pl.col("method") == "llm")
    assert described.height > 0 and len(encoded) <= described.filter(pl.col("level") == 0).height
    hits = search_clusters(index, searcher.embed(index, "card expiry"), 1000)
    assert hits.height == index.tree.nodes.height
    by_description = hits.filter(pl.col("matched_by") == "title and summary")["node_id"]
    assert set(by_description) <= set(described["node_id"])
    assert searcher.index(part) is index
    with read_only(explored.database) as conn:  # what the explorer asks before using it
        assert searcher.current(conn, part) is index
        assert searcher.current(conn, Partition(DATASET, "default")) is None  # never read
