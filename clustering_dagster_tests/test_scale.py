"""Large data: datasets that bring their own vectors, the sampled projection, labels from a
share of every cluster, and a backfill of several partitions run by the multiprocess executor."""

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from clustering_dagster.assets import (
    cluster_levels,
    embeddings,
    incremental_assignments,
    projections,
    raw_texts,
)
from clustering_dagster.core.clustering.cluster import fit_levels
from clustering_dagster.core.clustering.evaluate import agreement
from clustering_dagster.core.config.run_config import (
    EmbeddingConfig,
    LevelConfig,
    ProjectionConfig,
    RunConfig,
)
from clustering_dagster.core.data_in.dataset_vectors import dataset_vectors
from clustering_dagster.core.data_in.datasets import find_dataset
from clustering_dagster.core.embedding.embed import (
    encoder,
    half_precision,
    make_encoder,
    normalise_rows,
)
from clustering_dagster.core.errors import InputError
from clustering_dagster.core.labelling.label import label_sample
from clustering_dagster.core.projection.project import project

from .support.workspace import banking_slice, metadata

DIM = 8


def vector_table(texts: list[str], vectors) -> pa.Table:
    dim = len(vectors[0]) if len(vectors) else DIM
    flat = pa.array(np.asarray(vectors, np.float32).ravel())
    return pa.table(
        {"text": texts, "vec": pa.FixedSizeListArray.from_arrays(flat, dim)},
    )


def blobs(n: int, centres: int, seed: int = 0, dim: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Points around `centres` well separated unit directions, and their centre."""
    rng = np.random.default_rng(seed)
    directions = np.linalg.qr(rng.normal(size=(dim, dim)))[0][:centres]
    truth = rng.integers(0, centres, n)
    points = directions[truth] + rng.normal(0, 0.08 * np.sqrt(32 / dim), (n, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32), truth


def test_dataset_vectors_are_stored_instead_of_encoded(workspace):
    texts = banking_slice(4)["text"].to_list()
    vectors = np.random.default_rng(1).normal(size=(len(texts), DIM)).astype(np.float32)
    texts[1] = "  " + texts[0] + " "  # the same text after whitespace is normalised
    pq.write_table(vector_table(texts, vectors), workspace.datasets / "own.parquet")
    (workspace.datasets / "own.yaml").write_text("embedding_column: vec\n")
    result = workspace.materialize("own", assets=[raw_texts, embeddings])
    meta = metadata(result, "embeddings")
    assert meta["newly_embedded"] == len(texts) - 1
    assert meta["dimensions"] == DIM and meta["device"].startswith("none")
    stored = workspace.sql(
        "SELECT t.row_idx, s.embedding FROM clustering.embeddings e JOIN clustering.texts t "
        "USING (dataset, run_config, row_idx) JOIN clustering.embedding_store_8 s "
        "ON s.model = e.model AND s.text_hash = e.text_hash ORDER BY t.row_idx"
    )
    matrix = np.stack(stored["embedding"].to_list())
    assert np.allclose(matrix[1], vectors[0]) and np.allclose(matrix[2:], vectors[2:])
    again = workspace.materialize("own", assets=[raw_texts, embeddings])
    assert metadata(again, "embeddings")["newly_embedded"] == 0


def test_appended_texts_bring_their_own_vectors_to_incremental_assignment(workspace):
    """A dataset with an `embedding_column` that grows: the appended texts are assigned with the
    vectors they bring (8-d here), never encoded by the model, and only theirs are stored."""
    points, truth = blobs(150, 3, seed=2, dim=DIM)
    texts = [f"question {i} about topic {'abc'[t]}" for i, t in enumerate(truth)]
    path = workspace.datasets / "own.parquet"
    pq.write_table(vector_table(texts, points), path)
    (workspace.datasets / "own.yaml").write_text("embedding_column: vec\n")
    clustering = [raw_texts, embeddings, projections, cluster_levels]
    assert workspace.materialize("own", assets=clustering).success
    fine = workspace.sql(
        "SELECT t.text, a.cluster_id FROM clustering.assignments a JOIN clustering.texts t "
        "USING (dataset, run_config, row_idx) WHERE a.level_name = 'fine'"
    )
    blob = dict(zip(texts, truth, strict=True))
    fine = fine.with_columns(blob=pl.col("text").replace_strict(blob))
    new_points, new_truth = blobs(2, 3, seed=2, dim=DIM)  # the same centres
    pq.write_table(
        vector_table(texts + ["late one", "late two"], np.vstack([points, new_points])), path
    )
    stored = workspace.sql("SELECT count(*) AS n FROM clustering.embedding_store_8")["n"][0]
    result = workspace.materialize("own", assets=[incremental_assignments])
    assert metadata(result, "incremental_assignments")["appended_texts"] == 2
    late = workspace.sql(
        "SELECT text, cluster_id FROM clustering.incremental_assignments "
        "WHERE level_name = 'fine' ORDER BY text"
    )
    for cluster, own in zip(late["cluster_id"], new_truth, strict=True):
        members = fine.filter(pl.col("cluster_id") == cluster)["blob"]
        assert (members == own).mean() > 0.9  # a cluster of its own blob
    assert (
        workspace.sql("SELECT count(*) AS n FROM clustering.embedding_store_8")["n"][0]
        == stored + 2
    )
    tables = workspace.sql("SELECT table_name FROM information_schema.tables")["table_name"]
    assert "embedding_store_384" not in tables.to_list()  # the model never ran


@pytest.mark.parametrize(
    ("vectors", "message"),
    [
        ([[1.0] * DIM, [1.0] * (DIM - 1)], "row 2: a 7-d vector where the others are 8-d"),
        ([[1.0] * DIM, [float("nan")] * DIM], "row 2: a value is NaN, null or infinite"),
        ([[1.0] * DIM, None], "row 2: no vector"),
        (["a", "b"], "holds string, not a list of floats per row"),
    ],
)
def test_bad_vectors_are_named_by_file_column_and_row(tmp_path, vectors, message):
    table = pa.table({"text": ["one", "two"], "vec": vectors})
    pq.write_table(table, tmp_path / "bad.parquet")
    (tmp_path / "bad.yaml").write_text("embedding_column: vec\n")
    with pytest.raises(InputError, match="bad.parquet: column 'vec'") as err:
        list(dataset_vectors(find_dataset(tmp_path, "bad")))
    assert message in str(err.value)


def test_vectors_need_parquet(workspace):
    workspace.add_dataset("flat", banking_slice(2), spec="embedding_column: vec\n")
    result = workspace.materialize("flat", assets=[raw_texts], raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error.message
    assert "embedding_column 'vec' needs Parquet files" in failure


def test_projection_fits_a_sample_and_places_the_rest():
    points, truth = blobs(1200, 6)
    config = ProjectionConfig(pca_components=None, n_neighbors=15, fit_sample=300, random_state=3)
    result = project(points, config)
    assert result.method == "umap on a sample of 300, the rest placed"
    assert result.cluster_space.shape == (1200, 5) and result.map_2d.shape == (1200, 2)
    centres = np.stack([result.cluster_space[truth == c].mean(0) for c in range(6)])
    nearest = np.argmin(((result.cluster_space[:, None] - centres) ** 2).sum(-1), 1)
    assert (nearest == truth).mean() > 0.99  # placed points land in their own blob
    assert result.fitted.sum() == 300


def test_levels_fit_the_projections_sample_and_vote_the_rest_in():
    """Above fit_sample, HDBSCAN sees only the texts UMAP fitted (its sizes scaled to them) and
    every other text takes the cluster its nearest fitted texts vote for, in embedding space."""
    points, truth = blobs(3000, 6, seed=1)
    config = ProjectionConfig(pca_components=None, n_neighbors=15, fit_sample=600, random_state=3)
    result = project(points, config)
    level = LevelConfig(name="fine", min_cluster_size=0.05, min_samples=10)
    space = result.cluster_space.copy()
    voted = ~result.fitted
    space[voted] = np.random.default_rng(0).normal(0, 100, (voted.sum(), space.shape[1]))
    fine = fit_levels(space, points, [level], seed=0, fitted=result.fitted)[0]  # never sees them
    assert fine.n_clusters == 6
    assert agreement(truth, fine.labels)["ari"] > 0.99
    assert np.all(fine.membership[voted] > 0.5)  # the winning share, times the voters' own
    assert fine.noise[voted].mean() <= fine.noise[result.fitted].mean() + 0.05


def test_labels_come_from_a_share_of_every_cluster():
    finest = np.repeat(np.arange(4), [10_000, 5_000, 60, 3])
    rows = label_sample(finest, budget=2_000)
    counts = np.bincount(finest[rows], minlength=4)
    assert counts[0] == 1_328 and counts[1] == 664  # 2,000 / 15,063 of each, rounded up
    assert counts[2] == 50 and counts[3] == 3  # at least 50 of a cluster, or all it has
    assert np.all(np.diff(rows) > 0)
    assert np.array_equal(label_sample(finest[:20], budget=2_000), np.arange(20))


def test_backfill_with_the_multiprocess_executor(tmp_path):
    """`dagster job backfill` of two partitions; every run executes its steps in separate
    processes (CLUSTERING_EXECUTOR=multiprocess), the runs at the same time. The vectors have
    MiniLM's 384 dimensions: the labeler embeds its phrases with the run configuration's model."""
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    names = ["part_a", "part_b"]
    for i, name in enumerate(names):
        points, _ = blobs(12, 3, seed=i, dim=384)
        texts = banking_slice(1)["text"].to_list()[:12]
        pq.write_table(vector_table(texts, points), datasets / f"{name}.parquet")
        (datasets / f"{name}.yaml").write_text("embedding_column: vec\n")
    home = tmp_path / "dagster_home"
    home.mkdir()
    # no daemon here: runs are launched as the backfill submits them (dagster dev queues them)
    (home / "dagster.yaml").write_text(
        "run_coordinator:\n  module: dagster._core.run_coordinator\n"
        "  class: DefaultRunCoordinator\ntelemetry:\n  enabled: false\n"
    )
    env = os.environ | {
        "DAGSTER_HOME": str(home),
        "CLUSTERING_EXECUTOR": "multiprocess",
        "CLUSTERING_DATASETS_DIR": str(datasets),
        "CLUSTERING_DUCKDB_PATH": str(tmp_path / "results.duckdb"),
        "CLUSTERING_RUN_CONFIGS": str(tmp_path / "run_configs.yaml"),
    }
    (tmp_path / "run_configs.yaml").write_text(
        "default:\n  levels:\n    - {name: top, method: merge, n_clusters: 2}\n"
        "    - {name: fine, method: kmeans, k: 3}\n"
    )
    with DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("dataset", names)
    keys = ",".join(f"{name}|default" for name in names)
    command = [
        sys.executable, "-m", "dagster", "job", "backfill", "-m", "clustering_dagster.definitions",
        "-j", "cluster_texts", "--partitions", keys, "--noprompt",
    ]  # fmt: skip
    # the command returns once its code server has seen the runs it launched finish
    launched = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert "Launched backfill job" in launched.stdout, launched.stdout + launched.stderr
    with DagsterInstance.from_config(str(home)) as instance:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            runs = instance.get_runs(RunsFilter(job_name="cluster_texts"))
            if len(runs) == 2 and all(run.is_finished for run in runs):
                break
            time.sleep(1)
        assert [run.status for run in runs] == [DagsterRunStatus.SUCCESS] * 2
        pids = set()
        for run in runs:
            assert run.tags["dagster/backfill"]
            events = instance.all_logs(run.run_id)
            pids |= {e.dagster_event.pid for e in events if e.dagster_event and e.step_key}
        assert len(pids) > 2 * 3  # one process per step, several steps per run
    with duckdb.connect(env["CLUSTERING_DUCKDB_PATH"], read_only=True) as conn:
        published = conn.execute(
            "SELECT dataset, count(*) FROM clustering.hierarchy GROUP BY 1"
        ).pl()
    assert sorted(published["dataset"]) == names


def test_float16_encoding_path():
    """precision float16 (auto picks it on CUDA) runs the model in half precision; on this CPU
    the same code path gives vectors within rounding of float32 ones."""
    texts = ["my card has not arrived", "how do I top up by cheque?"]
    full = make_encoder(EmbeddingConfig(device="cpu"))(texts)
    half = make_encoder(EmbeddingConfig(device="cpu", precision="float16"))(texts)
    assert half.dtype == np.float32
    assert np.allclose(normalise_rows(half), normalise_rows(full), atol=2e-2)
    assert half_precision(EmbeddingConfig(), "cuda") and not half_precision(
        EmbeddingConfig(), "cpu"
    )


def test_worker_processes_embed_the_chunks(workspace):
    """`worker_devices` spreads each chunk over one worker process per device (here two CPU
    workers; on a GPU machine e.g. [cuda:0, cuda:1]): the vectors are the in-process ones, and the
    setting leaves the run configuration's hash alone."""
    texts = banking_slice(3)["text"].to_list()
    workspace.add_dataset("bank", banking_slice(3))
    workspace.write_configs(
        "default:\n  embedding: {device: cpu, worker_devices: [cpu, cpu]}\n"
        "  projection: {random_state: 0}\n  levels:\n"
        "    - {name: fine, method: hdbscan, min_cluster_size: 5}\n"
    )
    pooled = EmbeddingConfig(device="cpu", worker_devices=("cpu", "cpu"))
    # workers inherit an ignored SIGTERM (as under some job runners): they must still end
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with encoder(pooled) as encode:
            workers = [p.pid for p in multiprocessing.active_children() if p.is_alive()]
            assert len(workers) == 2
            vectors = encode(texts)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)  # stopped with the run
    assert np.allclose(vectors, make_encoder(EmbeddingConfig(device="cpu"))(texts), atol=1e-5)
    result = workspace.materialize("bank", assets=[raw_texts, embeddings])
    assert metadata(result, "embeddings")["newly_embedded"] == len(set(texts))
    stored = workspace.sql("SELECT count(*) AS n FROM clustering.embedding_store_384")["n"][0]
    assert stored == len(set(texts))
    hashes = {
        RunConfig(name="x", embedding=embedding, levels=[{"name": "fine"}]).params_hash()
        for embedding in (pooled, EmbeddingConfig(device="cpu"))
    }
    assert len(hashes) == 1
