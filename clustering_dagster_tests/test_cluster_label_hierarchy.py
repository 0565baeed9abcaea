import numpy as np
import pytest

from clustering_dagster.core.clustering.cluster import fit_levels, min_cluster_size, parents
from clustering_dagster.core.config.run_config import LevelConfig
from clustering_dagster.core.labelling.hierarchy import build_tree, render_tree
from clustering_dagster.core.labelling.keyphrases import class_tfidf, phrase_matrix
from clustering_dagster.core.labelling.label import KeywordLabeler, LevelTexts


def blobs(seed=0):
    """Two groups of three well separated blobs of 60 points each, plus 5 far outliers."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0, 0], [4, 0], [0, 4], [40, 40], [44, 40], [40, 44]], float)
    points = np.concatenate([c + rng.normal(0, 0.4, (60, 2)) for c in centres])
    outliers = rng.uniform(-20, 70, (5, 2))
    truth = np.repeat(np.arange(6), 60)
    return np.concatenate([points, outliers]).astype(np.float32), truth


LEVELS = (
    LevelConfig(name="coarse", min_cluster_size=100, min_samples=5),
    LevelConfig(name="fine", min_cluster_size=30, min_samples=5),
)


def test_levels_find_the_blobs_assign_everything_and_nest():
    space, truth = blobs()
    coarse, fine = fit_levels(space, space, LEVELS, seed=0)
    assert (coarse.n_clusters, fine.n_clusters) == (2, 6)
    assert len(coarse.labels) == len(fine.labels) == len(space)
    # every fine cluster sits inside one coarse cluster
    for cluster in range(fine.n_clusters):
        assert len(set(coarse.labels[fine.labels == cluster])) == 1
    # the fine level recovers the blobs exactly
    for blob in range(6):
        assert len(set(fine.labels[:360][truth == blob])) == 1
    # outliers were noise, got a cluster anyway, and are flagged
    assert fine.noise[-5:].all() and not fine.noise[:360].any()
    assert not fine.moved_to_nest.any()
    assert 0 < fine.noise_share < 0.05
    assert ((fine.membership >= 0) & (fine.membership <= 1)).all()
    # ids are ordered by size
    sizes = np.bincount(fine.labels)
    assert list(sizes) == sorted(sizes, reverse=True)


def test_kmeans_level_and_nesting_of_disagreeing_levels():
    space, _ = blobs()
    levels = (
        LevelConfig(name="k2", method="kmeans", k=2),
        LevelConfig(name="k7", method="kmeans", k=7),
    )
    top, bottom = fit_levels(space, space, levels, seed=0)
    assert top.n_clusters == 2 and bottom.n_clusters == 7
    assert sorted(parents(bottom.labels, top.labels)) == list(range(7))
    for cluster in range(bottom.n_clusters):
        assert len(set(top.labels[bottom.labels == cluster])) == 1


@pytest.mark.parametrize("n", [1, 2, 7])
def test_tiny_and_identical_inputs_get_one_sane_cluster(n):
    space = np.ones((n, 5), np.float32)
    extra = (
        LevelConfig(name="k", method="kmeans", k=3),
        LevelConfig(name="k2", method="merge", n_clusters=2),
        LevelConfig(name="last", min_cluster_size=3),
    )
    levels = fit_levels(space, space, LEVELS + extra, seed=0)
    for level in levels:
        assert level.labels.tolist() == [0] * n


def test_min_cluster_size_shares_and_counts():
    assert min_cluster_size(LevelConfig(name="a", min_cluster_size=0.01), 10_000) == 100
    assert min_cluster_size(LevelConfig(name="a", min_cluster_size=0.01), 100) == 5
    assert min_cluster_size(LevelConfig(name="a", min_cluster_size=40), 10) == 10


TEXTS = [
    "my card has not arrived yet",
    "when will my new card arrive",
    "card arrival is late",
    "exchange rate for euros",
    "what exchange rate do you use",
    "bad exchange rate on my transfer",
]


def test_class_tfidf_finds_the_phrases_that_set_clusters_apart():
    labels = np.array([0, 0, 0, 1, 1, 1])
    counts, vocabulary = phrase_matrix(TEXTS)
    scores, held = class_tfidf(counts, labels)
    assert held[1, list(vocabulary).index("exchange rate")] == 3
    top = [vocabulary[np.argmax(row)] for row in scores]
    assert top[0] in {"card", "arrive", "arrived", "arrival"}
    assert top[1] in {"exchange", "rate", "exchange rate"}


def test_keyword_labeler_without_a_model_names_clusters_with_keywords_and_central_examples():
    labels = np.array([0, 0, 0, 1, 1, 1])
    rng = np.random.default_rng(0)
    embeddings = np.concatenate([rng.normal(0, 1, (3, 8)) + 5, rng.normal(0, 1, (3, 8)) - 5])
    named = KeywordLabeler(n_keywords=4, n_examples=2).label(LevelTexts(labels, TEXTS, embeddings))
    assert "card" in named[0].keywords and "exchange rate" in named[1].keywords
    assert "card" in named[0].label and "exchange" in named[1].label
    assert set(named[0].examples) <= set(TEXTS[:3]) and len(named[0].examples) == 2


def test_keyword_labeler_copes_with_function_words_only():
    named = KeywordLabeler().label(
        LevelTexts(np.array([0, 0]), ["the and of", "it is the"], np.eye(2))
    )
    assert named[0].keywords == () and named[0].label in {"the and of", "it is the"}


def test_tree_rows_read_top_down_with_parents_and_paths():
    coarse = np.array([4, 4, 4, 9, 9])  # stable ids need not be dense
    fine = np.array([0, 0, 7, 1, 1])
    tree = build_tree(
        ["coarse", "fine"],
        [coarse, fine],
        [{4: "cards", 9: "money"}, {0: "card arrival", 1: "transfers", 7: "card pin"}],
        [{4: ("card",), 9: ("money",)}, {0: ("arrive",), 1: ("transfer",), 7: ("pin",)}],
    )
    assert tree["node_id"].to_list() == ["coarse/4", "fine/0", "fine/7", "coarse/9", "fine/1"]
    assert tree["parent_id"].to_list() == [None, "coarse/4", "coarse/4", None, "coarse/9"]
    assert tree["size"].to_list() == [3, 2, 1, 2, 2]
    assert tree["path"][2] == "cards > card pin"
    assert tree["n_children"].to_list() == [2, 0, 0, 1, 0]
    assert render_tree(tree).splitlines()[1] == "  - card arrival (2)"
    # a cut list of children says how many are left out and how many texts they hold
    assert render_tree(tree, max_children=1).splitlines() == [
        "- cards (3)",
        "  - card arrival (2)",
        "  - +1 more (1)",
        "- money (2)",
        "  - transfers (2)",
    ]
