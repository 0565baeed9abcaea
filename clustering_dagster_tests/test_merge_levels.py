"""Upper levels merged from the finest clusters: real texts, the real MiniLM model and UMAP."""

from itertools import pairwise

import numpy as np
import polars as pl
import pytest
from scipy.cluster.hierarchy import fcluster, linkage
from sklearn.metrics import adjusted_rand_score

from clustering_dagster.core.clustering.agglomerate import cut, join_tree, merge_clusters
from clustering_dagster.core.clustering.cluster import fit_levels, parents
from clustering_dagster.core.clustering.upper_levels import upper_levels
from clustering_dagster.core.config.run_config import (
    EmbeddingConfig,
    LevelConfig,
    ProjectionConfig,
    load_run_configs,
)
from clustering_dagster.core.embedding.embed import make_encoder, normalise_rows
from clustering_dagster.core.errors import InputError
from clustering_dagster.core.projection.project import project

from .support.paths import REPO, SHIPPED_CONFIGS
from .support.workspace import banking_slice

HWU64 = REPO / "data" / "hwu64" / "hwu64.csv"
FOUR_TOPICS = ["alarm", "audio", "email", "transport"]  # HWU64 scenarios of 3-4 intents each
DEFAULT = load_run_configs(SHIPPED_CONFIGS)["default"]
# Two merge levels listed explicitly above the shipped fine level: the merge mechanics under test.
EXPLICIT_LEVELS = (
    LevelConfig(name="coarse", method="merge", n_clusters=8, min_gap=2.0),
    LevelConfig(name="medium", method="merge", branching=3),
    DEFAULT.levels[-1],
)


def embed_and_cluster(texts: list[str]):
    """Unit embeddings of the texts, their cluster space (UMAP seeded) and the explicit levels
    fitted on them."""
    vectors = normalise_rows(make_encoder(EmbeddingConfig())(texts))
    space = project(vectors, ProjectionConfig(n_neighbors=30, random_state=0)).cluster_space
    return vectors, space, fit_levels(space, vectors, EXPLICIT_LEVELS, seed=0)


@pytest.fixture(scope="module")
def four_topics():
    """130 utterances from each of four clearly separate HWU64 scenarios, clustered."""
    frame = (
        pl.read_csv(HWU64)
        .filter(pl.col("scenario").is_in(FOUR_TOPICS))
        .sort("scenario", "text")
        .group_by("scenario", maintain_order=True)
        .map_groups(lambda group: group.sample(130, seed=0))
    )
    vectors, _, levels = embed_and_cluster(frame["text"].to_list())
    return frame, vectors, levels


@pytest.fixture(scope="module")
def banking():
    """600 Banking77 queries (30 intents) clustered with the explicit levels."""
    frame = banking_slice(30)
    vectors, space, levels = embed_and_cluster(frame["text"].to_list())
    return frame, vectors, space, levels


def test_four_separate_topics_come_out_as_four_top_nodes(four_topics):
    frame, _, (top, medium, fine) = four_topics
    assert top.n_clusters == 4
    assert fine.n_clusters > medium.n_clusters > top.n_clusters
    scenario = frame["scenario"].to_numpy()
    majority = set()
    for node in range(4):
        values, counts = np.unique(scenario[top.labels == node], return_counts=True)
        assert counts.max() / counts.sum() > 0.9
        majority.add(values[np.argmax(counts)])
    assert majority == set(FOUR_TOPICS)


def test_without_the_gap_rule_the_target_decides(four_topics):
    _, vectors, (_, medium, _) = four_topics
    groups = merge_clusters(vectors, medium.labels, target=3)
    assert groups.max() + 1 == 3  # asked for 3 and no min_gap: 3, across the four topics


def test_upper_levels_are_unions_of_the_clusters_below_and_move_no_text(banking):
    frame, _, _, levels = banking
    top, medium, fine = levels
    assert [level.method for level in levels] == ["merge", "merge", "hdbscan"]
    for coarser, finer in [(top, medium), (medium, fine)]:
        for cluster in range(finer.n_clusters):
            assert len(np.unique(coarser.labels[finer.labels == cluster])) == 1
        assert not coarser.moved_to_nest.any()
        # a text keeps the noise flag and membership it has at the finest level
        assert (coarser.noise == fine.noise).all()
        assert (coarser.membership == fine.membership).all()
        children = np.bincount(list(parents(finer.labels, coarser.labels).values()))
        assert children.min() >= 2  # no node is a chain of one child
        sizes = np.bincount(finer.labels)
        lookup = parents(finer.labels, coarser.labels)
        for node in range(coarser.n_clusters):
            below = [c for c, p in lookup.items() if p == node]
            assert sizes[below].sum() == (coarser.labels == node).sum()
    # about a third of the fine clusters, and about 8 at the top (the shipped targets)
    assert round(fine.n_clusters / 3 * 0.6) <= medium.n_clusters <= round(fine.n_clusters / 3) + 1
    assert 2 <= top.n_clusters <= 9
    assert np.bincount(top.labels).max() <= 0.5 * len(frame)
    # ids are ordered by size at every level
    for level in levels:
        sizes = np.bincount(level.labels)
        assert list(sizes) == sorted(sizes, reverse=True)


def test_weighted_ward_equals_ward_over_the_texts_and_average_linkage_matches_scipy():
    rng = np.random.default_rng(0)
    points = normalise_rows(rng.normal(size=(40, 6)))
    weights = rng.integers(1, 4, 40)
    # a cluster of w identical texts is one point of weight w: the same tree over the groups
    texts = np.repeat(points, weights, axis=0)
    owner = np.repeat(np.arange(40), weights)
    tree = join_tree(points, weights.astype(float), "ward")
    reference = fcluster(linkage(texts, "ward"), 6, "maxclust")
    assert adjusted_rand_score(reference, cut(tree, 6)[owner]) == 1.0
    average = join_tree(points, np.ones(40), "average")
    reference = fcluster(linkage(points, "average", metric="cosine"), 5, "maxclust")
    assert adjusted_rand_score(reference, cut(average, 5)) == 1.0
    assert (np.diff(tree.costs) >= 0).all() and (np.diff(average.costs) >= 0).all()


def test_few_clusters_stay_as_they_are():
    vectors = normalise_rows(np.random.default_rng(0).normal(size=(30, 8)))
    assert merge_clusters(vectors, np.repeat(np.arange(3), 10), target=1).tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("levels", "message"),
    [
        (
            "[{name: fine, method: kmeans, k: 80}, {name: coarse, method: kmeans, k: 8}]",
            "level 'coarse', listed below 'fine', is coarser",
        ),
        (
            "[{name: a, min_cluster_size: 0.001}, {name: b, min_cluster_size: 0.04}]",
            "level 'b', listed below 'a', is coarser",
        ),
        (
            "[{name: a, method: merge, n_clusters: 30}, {name: b, method: kmeans, k: 8}]",
            "level 'b', listed below 'a', is coarser",
        ),
        ("[{name: fine}, {name: top, method: merge, n_clusters: 5}]", "cannot be method merge"),
        ("[{name: top, method: merge}, {name: fine}]", "method merge needs n_clusters or"),
        ("[{name: top, k: 5}, {name: fine}]", "level 'top': k not used by method hdbscan"),
        ("[{name: top, method: merge, branching: 1}, {name: fine}]", "greater than 1"),
    ],
)
def test_misordered_or_ill_formed_levels_are_errors_naming_file_and_entry(
    tmp_path, levels, message
):
    path = tmp_path / "configs.yaml"
    path.write_text(f"ok: {{levels: [{{name: fine}}]}}\nbad:\n  levels: {levels}\n")
    configs = load_run_configs(path)
    assert list(configs) == ["ok"]
    with pytest.raises(InputError, match=r"configs\.yaml, line 2: run configuration 'bad'") as err:
        configs["bad"]
    assert message in str(err.value)


def test_the_shipped_levels_cluster_the_finest_and_add_merged_levels_above():
    assert [(level.name, level.method) for level in DEFAULT.levels] == [("fine", "hdbscan")]
    assert DEFAULT.upper_levels is not None
    example = load_run_configs(SHIPPED_CONFIGS)["llm_example"]
    assert example.levels == DEFAULT.levels  # the *default_levels anchor
    assert example.upper_levels == DEFAULT.upper_levels


@pytest.mark.parametrize(
    ("fine", "names"),
    [
        (12, ["coarse"]),
        (40, ["coarse"]),
        (80, ["coarse", "medium"]),
        (141, ["coarse", "medium"]),
        (500, ["coarse", "medium", "medium_2"]),
        (2000, ["coarse", "medium", "medium_2", "medium_3"]),
        (20000, ["coarse", "medium", "medium_2", "medium_3", "medium_4"]),
    ],
)
def test_the_number_of_upper_levels_follows_the_fine_clusters(fine, names):
    levels = upper_levels(fine, DEFAULT.upper_levels)
    assert [level.name for level in levels] == names
    counts = [level.n_clusters for level in levels] + [fine]
    assert 3 <= counts[0] <= 25  # the top
    for coarser, finer in pairwise(counts):
        assert 2.5 <= finer / coarser <= 15  # children per node, on average (about 3 to 15)
    assert [level.min_gap for level in levels] == [2.0] + [None] * (len(levels) - 1)


def test_real_clusters_get_a_readable_tree_above_them(banking):
    frame, vectors, space, _ = banking
    levels = fit_levels(space, vectors, DEFAULT.levels, 0, upper=DEFAULT.upper_levels)
    fine = levels[-1]
    expected = [level.name for level in upper_levels(fine.n_clusters, DEFAULT.upper_levels)]
    assert [level.name for level in levels] == [*expected, "fine"]
    assert 3 <= levels[0].n_clusters <= 25
    for coarser, finer in pairwise(levels):
        children = np.bincount(list(parents(finer.labels, coarser.labels).values()))
        assert 1.5 <= children.mean() <= 15
        for cluster in range(finer.n_clusters):  # nested
            assert len(np.unique(coarser.labels[finer.labels == cluster])) == 1


def test_upper_levels_cannot_reuse_their_names(tmp_path):
    path = tmp_path / "configs.yaml"
    path.write_text("bad: {levels: [{name: medium}], upper_levels: {}}\n")
    with pytest.raises(InputError, match="rename level 'medium'"):
        load_run_configs(path)["bad"]
