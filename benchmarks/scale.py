"""A million texts on one machine: how time and memory grow with the number of texts.

Datasets of 10k, 100k and 1M rows arrive with their vectors (a Parquet `embedding` column, the
dataset's `embedding_column`): all of Banking77's real MiniLM vectors (13,083; for 10k a random
10,000 of them) plus synthetic points, each a randomly chosen real vector with Gaussian noise
(sigma NOISE per dimension) renormalised, whose text is that real text with ` #<n>` appended (the
keyword labeler ignores numbers) and whose category is the real one. Each size is materialised,
raw_texts through cluster_hierarchy (projection, every level, the offline labels, the tree), in
a fresh DuckDB file by a child process (`--one`), whose process tree's peak RSS is sampled.
Quality is the fine level's NMI on the real texts only.

Also: `nmi_drop`, the fine-level NMI of all of Banking77 alone through the path used so far
(UMAP and HDBSCAN on every text) minus that through the large-N path (UMAP and HDBSCAN fitted on
a sample of LARGE_N_SAMPLE texts, the others placed on the map and voted into clusters by their
nearest sampled texts), each the mean of NMI_ROUNDS runs side by side; and `encode_overhead`,
the embeddings asset's encoding time over a bare `SentenceTransformer.encode` of the same texts
with the same model and batch size (ENCODE_TEXTS distinct texts, the model loaded once for both;
medians of ENCODE_ROUNDS rounds run side by side).

The last line is one JSON object: n, seconds, peak_rss_gb, growth_ratio (1M over 100k),
nmi_drop, encode_overhead.

Usage: python benchmarks/scale.py [--sizes 10000,100000,1000000] [--skip-nmi] [--skip-encode]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import yaml
from common import OUT, REPO, link_datasets, machine, materialise, published_levels

SOURCE = OUT / "scale_source.duckdb"  # kept: Banking77's MiniLM vectors, embedded once
DATASETS = OUT / "scale_datasets"
CONFIGS = OUT / "scale_run_configs.yaml"
ASSETS = [
    "raw_texts",
    "embeddings",
    "projections",
    "cluster_levels",
    "cluster_labels",
    "cluster_hierarchy",
]
SIZES = [10_000, 100_000, 1_000_000]
NOISE = 0.02
LARGE_N_SAMPLE = 5_000
NMI_ROUNDS = 4
ENCODE_TEXTS = 5_000
ENCODE_ROUNDS = 3
ROW_GROUP = 100_000


def banking77() -> tuple[pl.DataFrame, np.ndarray]:
    """All of Banking77 (text, category) with its MiniLM vectors, embedded once into SOURCE."""
    from clustering_dagster.core.storage import Partition, connect, partition_vectors

    folder = link_datasets(OUT / "scale_source_datasets", ["banking77"])
    materialise(SOURCE, folder, "banking77", "default", assets=_assets(["raw_texts", "embeddings"]))
    with connect(SOURCE) as conn:
        rows, vectors = partition_vectors(conn, Partition("banking77", "default"))
        truth = conn.execute(
            "SELECT ground_truth FROM clustering.texts WHERE dataset = 'banking77' "
            "AND run_config = 'default' ORDER BY row_idx"
        ).pl()
    return rows.select("text", category=truth["ground_truth"]), vectors


def _assets(names: list[str]) -> list:
    from clustering_dagster.assets import ALL_ASSETS

    return [a for a in ALL_ASSETS if a.key.to_user_string() in names]


def write_dataset(name: str, n: int, texts: pl.DataFrame, vectors: np.ndarray) -> None:
    """DATASETS/<name>.parquet of n rows (real ones first) with its YAML, unless it exists."""
    path = DATASETS / f"{name}.parquet"
    (DATASETS / f"{name}.yaml").write_text(
        "text_column: text\nid_column: id\nlabel_column: category\nembedding_column: embedding\n"
    )
    if path.exists():
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(n)
    real = np.arange(len(texts)) if n >= len(texts) else np.sort(rng.choice(len(texts), n, False))
    dim = vectors.shape[1]
    with pq.ParquetWriter(path.with_suffix(".tmp"), _schema(dim)) as writer:
        for start in range(0, n, ROW_GROUP):
            rows = np.arange(start, min(n, start + ROW_GROUP))
            is_real = rows < len(real)
            source = np.where(is_real, real[np.minimum(rows, len(real) - 1)], 0)
            source[~is_real] = rng.integers(0, len(texts), int((~is_real).sum()))
            block = vectors[source].copy()
            noise = rng.normal(0, NOISE, (int((~is_real).sum()), dim)).astype(np.float32)
            block[~is_real] += noise
            block[~is_real] /= np.linalg.norm(block[~is_real], axis=1, keepdims=True)
            picked = texts[source]
            suffix = pl.Series(np.where(is_real, "", [f" #{i}" for i in rows]))
            table = pa.table(
                {
                    "id": [
                        f"{'b77' if r else 'syn'}:{i}" for i, r in zip(rows, is_real, strict=True)
                    ],
                    "text": (picked["text"] + suffix).to_arrow(),
                    "category": picked["category"].to_arrow(),
                    "embedding": pa.FixedSizeListArray.from_arrays(pa.array(block.ravel()), dim),
                },
                schema=_schema(dim),
            )
            writer.write_table(table)
    path.with_suffix(".tmp").rename(path)


def _schema(dim: int):
    import pyarrow as pa

    return pa.schema(
        [
            ("id", pa.string()),
            ("text", pa.string()),
            ("category", pa.string()),
            ("embedding", pa.list_(pa.float32(), dim)),
        ]
    )


def write_configs() -> None:
    """The shipped `default`, and `large_n`: the same with UMAP fitted on LARGE_N_SAMPLE texts."""
    shipped = yaml.safe_load((REPO / "data" / "run_configs.yaml").read_text())
    large = json.loads(json.dumps(shipped["default"]))
    large["projection"]["fit_sample"] = LARGE_N_SAMPLE
    CONFIGS.write_text(yaml.safe_dump({"default": shipped["default"], "large_n": large}))


def fine_nmi(database: Path, dataset: str, run_config: str, real_only: bool) -> float:
    from clustering_dagster.core.evaluate import agreement

    levels = published_levels(database, dataset, run_config)
    fine = levels.filter(pl.col("level") == levels["level"].max()).sort("row_idx")
    if real_only:
        with __import__("duckdb").connect(str(database), read_only=True) as conn:
            ids = conn.execute(
                "SELECT text_id FROM clustering.texts WHERE dataset = ? AND run_config = ? "
                "ORDER BY row_idx",
                [dataset, run_config],
            ).pl()["text_id"]
        fine = fine.filter(ids.str.starts_with("b77:"))
    return agreement(fine["ground_truth"].to_numpy(), fine["cluster_id"].to_numpy())["nmi"]


def peak_rss_gb() -> float:
    """The kernel's high-water mark of this process's resident memory (and of any child's)."""
    import resource

    peaks = [
        resource.getrusage(who).ru_maxrss
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    ]
    return max(peaks) / 2**20  # kilobytes on Linux


def one(dataset: str, run_config: str, database: Path) -> None:
    """Materialise one partition in a fresh DuckDB file; print its figures as JSON."""
    os.environ["CLUSTERING_RUN_CONFIGS"] = str(CONFIGS)
    for stale in (database, database.with_suffix(".duckdb.wal")):
        stale.unlink(missing_ok=True)
    result = materialise(database, DATASETS, dataset, run_config, CONFIGS, _assets(ASSETS))
    stages = {
        name: meta.get("projection_seconds", meta.get("embedding_seconds"))
        for name, meta in result["assets"].items()
    }
    with __import__("duckdb").connect(str(database), read_only=True) as conn:
        seconds = dict(
            conn.execute(
                "SELECT asset, round(seconds, 1) FROM clustering.materializations"
            ).fetchall()
        )
    levels = result["assets"]["cluster_levels"]
    print(
        json.dumps(
            {
                "seconds": result["seconds"],
                "stage_seconds": seconds,
                "inner_seconds": stages,
                "clusters": {k[9:]: v for k, v in levels.items() if k.startswith("clusters_")},
                "nmi_real": fine_nmi(database, dataset, run_config, dataset != "banking77_vectors"),
                "method": result["assets"]["projections"]["method"],
                "peak_rss_gb": peak_rss_gb(),
            }
        )
    )


def run_child(dataset: str, run_config: str) -> dict:
    """`one` in a child process, and its result."""
    database = OUT / f"scale_{dataset}_{run_config}.duckdb"
    command = [sys.executable, __file__, "--one", dataset, "--run-config", run_config]
    done = subprocess.run([*command, "--db", str(database)], stdout=subprocess.PIPE, text=True)
    if done.returncode:
        raise SystemExit(f"{dataset} | {run_config} failed ({done.returncode})")
    database.unlink(missing_ok=True)  # a million rows of results: gigabytes
    return json.loads(done.stdout.strip().splitlines()[-1])


def encode_overhead(texts: list[str]) -> tuple[float, float, float]:
    """(pipeline seconds, bare seconds, their ratio) for encoding the same distinct texts: the
    median of ENCODE_ROUNDS rounds, each a bare encode then the embeddings asset in a fresh file,
    side by side so that both see the same load on a shared machine."""
    from clustering_dagster.core.embed import _sentence_transformer, half_precision, pick_device
    from clustering_dagster.core.run_config import EmbeddingConfig

    config = EmbeddingConfig()
    device = pick_device(config.device)
    model = _sentence_transformer(config.model, device, half_precision(config, device))
    model.encode(texts[:256], batch_size=config.batch_size)  # warm up
    folder = OUT / "scale_encode_datasets"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    pl.DataFrame({"text": texts}).write_csv(folder / "encode.csv")
    database = OUT / "scale_encode.duckdb"
    bare, pipeline = [], []
    for _ in range(ENCODE_ROUNDS):
        began = time.perf_counter()
        model.encode(texts, batch_size=config.batch_size, convert_to_numpy=True)
        bare.append(time.perf_counter() - began)
        database.unlink(missing_ok=True)
        result = materialise(
            database, folder, "encode", "default", assets=_assets(["raw_texts", "embeddings"])
        )
        pipeline.append(result["assets"]["embeddings"]["embedding_seconds"])
        print(f"encode round: bare {bare[-1]:.1f} s, pipeline {pipeline[-1]:.1f} s", flush=True)
    return float(np.median(pipeline)), float(np.median(bare)), np.median(pipeline) / np.median(bare)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--skip-nmi", action="store_true")
    parser.add_argument("--skip-encode", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--run-config", default="default", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args.one, args.run_config, Path(args.db))
        return
    OUT.mkdir(parents=True, exist_ok=True)
    DATASETS.mkdir(parents=True, exist_ok=True)
    write_configs()
    texts, vectors = banking77()
    sizes = [int(s) for s in args.sizes.split(",")]
    for n in sizes:
        write_dataset(f"b77_{n}", n, texts, vectors)
    write_dataset("banking77_vectors", len(texts), texts, vectors)
    rows = {n: run_child(f"b77_{n}", "default") for n in sizes}
    print(machine())
    print(
        f"{'texts':>9s} {'seconds':>8s} {'peak GB':>7s} {'fine NMI (real)':>15s}  clusters  stages (s)"
    )
    for n, row in rows.items():
        clusters = "/".join(str(c) for c in row["clusters"].values())
        print(
            f"{n:9,d} {row['seconds']:8.1f} {row['peak_rss_gb']:7.2f} {row['nmi_real']:15.3f}  "
            f"{clusters:8s}  {row['stage_seconds']}"
        )
    nmi_drop = None
    if not args.skip_nmi:
        today, large = [], []
        for _ in range(NMI_ROUNDS):  # side by side: UMAP's threads make every fit differ
            today.append(run_child("banking77_vectors", "default")["nmi_real"])
            large.append(run_child("banking77_vectors", "large_n")["nmi_real"])
        nmi_drop = float(np.mean(today) - np.mean(large))
        print(
            f"Banking77 alone, fine NMI over {NMI_ROUNDS} rounds: UMAP on all "
            f"{' '.join(f'{x:.3f}' for x in today)} (mean {np.mean(today):.3f}), large-N path "
            f"(sample {LARGE_N_SAMPLE}) {' '.join(f'{x:.3f}' for x in large)} (mean "
            f"{np.mean(large):.3f}): drop {nmi_drop:.3f}"
        )
    overhead = None
    if not args.skip_encode:
        distinct = texts["text"].unique(maintain_order=True).head(ENCODE_TEXTS).to_list()
        pipeline, bare, overhead = encode_overhead(distinct)
        print(
            f"encoding {ENCODE_TEXTS} texts: pipeline {pipeline:.1f} s, bare "
            f"SentenceTransformer.encode {bare:.1f} s, ratio {overhead:.3f}"
        )
    largest, hundred_k = max(rows), rows.get(100_000)
    print(
        json.dumps(
            {
                "n": largest,
                "seconds": round(rows[largest]["seconds"], 1),
                "peak_rss_gb": round(rows[largest]["peak_rss_gb"], 2),
                "growth_ratio": round(rows[largest]["seconds"] / hundred_k["seconds"], 2)
                if hundred_k
                else None,
                "nmi_drop": None if nmi_drop is None else round(nmi_drop, 4),
                "encode_overhead": None if overhead is None else round(overhead, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
