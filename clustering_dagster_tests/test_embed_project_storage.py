import json
import subprocess
import sys

import duckdb
import numpy as np
import polars as pl
import pytest

from clustering_dagster.core.config.run_config import (
    EmbeddingConfig,
    ProjectionConfig,
    load_run_configs,
)
from clustering_dagster.core.embedding.embed import make_encoder, normalise_rows
from clustering_dagster.core.projection.neighbourhood import resolved_projection
from clustering_dagster.core.projection.project import neighbours, project
from clustering_dagster.core.storage.store import (
    SCHEMA,
    Partition,
    ensure_schema,
    missing_hashes,
    put_vectors,
    transaction,
    write_version,
)

from .support.openai_server import EMBEDDING_DIM, OpenAICompatibleServer
from .support.paths import REPO


def test_packaged_minilm_embeds_offline_and_puts_paraphrases_close():
    encode = make_encoder(EmbeddingConfig(batch_size=2))
    vectors = normalise_rows(
        encode(
            [
                "My card has not arrived yet",
                "When will my new card be delivered?",
                "What is the exchange rate for dollars?",
            ]
        )
    )
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2


def test_api_embeddings_go_through_litellm_over_http(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with OpenAICompatibleServer() as server:
        config = EmbeddingConfig(
            backend="litellm", model="openai/test-embedder", api_base=server.api_base, batch_size=2
        )
        vectors = make_encoder(config)(["card arrived", "card arrived late", "exchange rate"])
    assert vectors.shape == (3, EMBEDDING_DIM)
    assert [path for path, _ in server.requests] == ["/v1/embeddings"] * 2  # batches of 2
    assert server.requests[0][1]["input"] == ["card arrived", "card arrived late"]
    headers = {name.lower(): value for name, value in server.headers[0].items()}
    assert headers["authorization"] == "Bearer sk-test"
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_projection_shapes_and_small_input_fallback():
    rng = np.random.default_rng(0)
    vectors = np.concatenate([rng.normal(0, 1, (60, 20)), rng.normal(8, 1, (60, 20))])
    result = project(
        vectors.astype(np.float32), ProjectionConfig(pca_components=10, n_neighbors=10)
    )
    assert result.method == "umap"
    assert result.cluster_space.shape == (120, 5) and result.map_2d.shape == (120, 2)
    # the two groups stay apart in the cluster space
    a, b = result.cluster_space[:60].mean(0), result.cluster_space[60:].mean(0)
    assert np.linalg.norm(a - b) > 3 * result.cluster_space[:60].std(0).mean()
    tiny = project(vectors[:3].astype(np.float32), ProjectionConfig())
    assert tiny.method == "pca" and tiny.cluster_space.shape == (3, 5)
    single = project(vectors[:1].astype(np.float32), ProjectionConfig())
    assert single.map_2d.shape == (1, 2)
    with pytest.raises(ValueError, match="resolve it first"):
        project(vectors.astype(np.float32), ProjectionConfig())


FRESH_PROCESS_FIT = """
import importlib, json
import numpy as np
from clustering_dagster.core.config.run_config import ProjectionConfig
from clustering_dagster.core.projection.project import UNCACHED_KERNELS, project
points = np.random.default_rng(0).normal(size=(200, 20)).astype(np.float32)
project(points, ProjectionConfig(n_neighbors=10))
kernels = [getattr(importlib.import_module(m), n) for m, names in UNCACHED_KERNELS.items()
           for n in names]
print(json.dumps({k.py_func.__name__: [sum(k.stats.cache_hits.values()),
                  sum(k.stats.cache_misses.values())] for k in kernels}))
"""


def test_a_fresh_process_loads_umaps_kernels_from_numbas_disk_cache():
    """The kernels umap-learn compiles in every process: the second of two fresh processes finds
    the ones it runs (the layout: the parallel one, UMAP unseeded) compiled on disk."""
    runs = [
        subprocess.run(
            [sys.executable, "-c", FRESH_PROCESS_FIT], capture_output=True, text=True, check=True
        )
        for _ in range(2)
    ]
    hits_misses = json.loads(runs[1].stdout.strip().splitlines()[-1])
    used = {name: hm for name, hm in hits_misses.items() if sum(hm)}
    assert set(used) == {
        "smooth_knn_dist",
        "compute_membership_strengths",
        "_nb_optimize_layout_euclidean_single_epoch_parallel",
    }
    assert all(misses == 0 and hits >= 1 for hits, misses in used.values()), used


def test_auto_neighbours_follow_the_finest_levels_minimum_size_within_10_to_30():
    """UMAP's neighbourhood is about the smallest cluster the finest level looks for: on small
    data (a 0.55% share of the texts) fewer neighbours, from 5,500 texts on and on a million
    texts' sample (the cap of 60 texts) 30; a number given is kept; KMeans: texts per cluster."""
    configs = load_run_configs(REPO / "data" / "run_configs.yaml")
    default = configs["default"]
    assert default.projection.n_neighbors == "auto"
    chosen = {n: resolved_projection(default, n).n_neighbors for n in (300, 1_000, 3_000, 4_000)}
    assert chosen == {300: 10, 1_000: 10, 3_000: 16, 4_000: 22}
    for n in (5_500, 13_083, 25_001, 1_000_000):
        assert resolved_projection(default, n).n_neighbors == 30
    given = default.projection.model_copy(update={"n_neighbors": 12})
    assert (
        resolved_projection(default.model_copy(update={"projection": given}), 10**6).n_neighbors
        == 12
    )
    assert resolved_projection(configs["kmeans"], 1_540).n_neighbors == 19  # 1,540 texts / k 80


def test_approximate_neighbours_for_large_inputs_agree_with_exact_ones():
    rng = np.random.default_rng(0)
    features = rng.normal(0, 1, (400, 8)).astype(np.float32)
    exact, _ = neighbours(features, 10, seed=0)
    approximate, distances = neighbours(features, 10, seed=0, exact_up_to=0)
    assert (approximate[:, 0] == np.arange(400)).all() and (distances[:, 0] == 0).all()
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approximate, exact, strict=True)])
    assert recall > 0.9


@pytest.fixture
def conn(tmp_path):
    with duckdb.connect(str(tmp_path / "t.duckdb")) as connection:
        ensure_schema(connection)
        yield connection


def _labels(n: int, name: str) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "level": [0] * n,
            "level_name": "fine",
            "cluster_id": list(range(n)),
            "size": [1] * n,
            "label": [name] * n,
            "keywords": [["k"]] * n,
            "examples": [["e"]] * n,
            "labeler": "x",
        }
    )


def test_a_failed_write_leaves_nothing_of_the_run(conn):
    part = Partition("d", "default", "run1")
    with pytest.raises(duckdb.Error), transaction(conn):
        write_version(conn, "cluster_labels", part, _labels(5, "new"))
        write_version(conn, "cluster_labels", part, pl.DataFrame({"no_such_column": [1]}))
    assert conn.execute("SELECT count(*) FROM clustering_store.cluster_labels").fetchone() == (0,)
    with transaction(conn):
        write_version(conn, "cluster_labels", part, _labels(5, "new"))
    stored = conn.execute(
        "SELECT version, count(*) FROM clustering_store.cluster_labels GROUP BY 1"
    )
    assert stored.fetchall() == [("run1", 5)]
    assert conn.execute("SELECT count(*) FROM clustering.cluster_labels").fetchone() == (0,)


def test_vector_store_is_content_addressed_per_model(conn):
    hashes = pl.Series(["a", "b", "c"])
    assert missing_hashes(conn, "m", hashes).to_list() == ["a", "b", "c"]
    put_vectors(conn, "m", pl.Series(["a", "b"]), np.eye(2, 4, dtype=np.float32))
    put_vectors(conn, "m", pl.Series(["b"]), np.ones((1, 4), np.float32))  # already there: kept
    assert missing_hashes(conn, "m", pl.Series(["a", "b", "c", "c"])).to_list() == ["c"]
    assert missing_hashes(conn, "other", hashes).to_list() == ["a", "b", "c"]
    stored = conn.execute(
        f"SELECT text_hash, embedding FROM {SCHEMA}.embedding_store_4 ORDER BY text_hash"
    ).fetchall()
    assert stored == [("a", (1.0, 0.0, 0.0, 0.0)), ("b", (0.0, 1.0, 0.0, 0.0))]
    column_type = conn.execute(
        "SELECT data_type FROM information_schema.columns WHERE table_name = 'embedding_store_4' "
        "AND column_name = 'embedding'"
    ).fetchone()[0]
    assert column_type == "FLOAT[4]"
    with pytest.raises(ValueError, match="returned 3-d vectors; the store holds 4-d"):
        put_vectors(conn, "m", pl.Series(["z"]), np.ones((1, 3), np.float32))
