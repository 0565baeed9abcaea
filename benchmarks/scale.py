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
the embeddings asset's encoding time over a bare encode of the same texts by the same model
object (`make_encoder`'s: `SentenceTransformer.encode` with the configured batch size, the model
loaded once for both; ENCODE_TEXTS distinct texts, medians of ENCODE_ROUNDS rounds run side by
side).

The last line is one JSON object: n, seconds, peak_rss_gb, growth_ratio (1M over 100k),
nmi_drop, encode_overhead.

Usage, from the repository root:
    python -m benchmarks.scale [--sizes 10000,100000,1000000] [--skip-nmi] [--skip-encode]
    python -m benchmarks.scale --smoke   (in a temporary folder: 500 Banking77 queries embedded,
        one dataset of 1,000 rows, one NMI round with a large-N sample of 250, 200 texts
        encoded once; a couple of minutes)
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import yaml

from benchmarks.common import (
    LABELLED,
    OUT,
    REPO,
    link_datasets,
    machine,
    materialise,
    published_levels,
    tree_assets,
)

# In OUT (kept between runs: Banking77's MiniLM vectors are embedded once), or a temporary folder
SOURCE = "scale_source.duckdb"
DATASETS = "scale_datasets"
CONFIGS = "scale_run_configs.yaml"
SIZES = [10_000, 100_000, 1_000_000]
NOISE = 0.02
LARGE_N_SAMPLE = 5_000
NMI_ROUNDS = 4
ENCODE_TEXTS = 5_000
ENCODE_ROUNDS = 3
ROW_GROUP = 100_000
SMOKE = {"texts": 500, "sizes": [1_000], "nmi_rounds": 1, "large_n_sample": 250,
         "encode_texts": 200, "encode_rounds": 1}  # fmt: skip


def banking77(work: Path = OUT, n: int | None = None) -> tuple[pl.DataFrame, np.ndarray]:
    """All of Banking77 (or `n` random queries of it) as (text, category) with its MiniLM
    vectors, embedded once into `work`/SOURCE."""
    from clustering_dagster.core.storage.store import Partition, connect, partition_vectors

    if n is None:
        folder = link_datasets(work / "scale_source_datasets", ["banking77"])
    else:
        folder = work / "scale_source_datasets"
        folder.mkdir(parents=True, exist_ok=True)
        source, spec = LABELLED["banking77"]
        frame = pl.concat(pl.read_csv(f) for f in sorted(source.glob("*.csv")))
        frame.sample(n, seed=0).write_csv(folder / "banking77.csv")
        (folder / "banking77.yaml").write_text(spec)
    database = work / SOURCE
    materialise(
        database, folder, "banking77", "default", assets=tree_assets(["raw_texts", "embeddings"])
    )
    with connect(database) as conn:
        rows, vectors = partition_vectors(conn, Partition("banking77", "default"))
        truth = conn.execute(
            "SELECT ground_truth FROM clustering.texts WHERE dataset = 'banking77' "
            "AND run_config = 'default' ORDER BY row_idx"
        ).pl()
    return rows.select("text", category=truth["ground_truth"]), vectors


def write_dataset(
    datasets: Path, name: str, n: int, texts: pl.DataFrame, vectors: np.ndarray
) -> None:
    """`datasets`/<name>.parquet of n rows (real ones first) with its YAML, unless it exists."""
    path = datasets / f"{name}.parquet"
    (datasets / f"{name}.yaml").write_text(
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


def write_configs(path: Path, sample: int = LARGE_N_SAMPLE) -> None:
    """The shipped `default`, and `large_n`: the same with UMAP fitted on `sample` texts."""
    shipped = yaml.safe_load((REPO / "data" / "run_configs.yaml").read_text())
    large = json.loads(json.dumps(shipped["default"]))
    large["projection"]["fit_sample"] = sample
    path.write_text(yaml.safe_dump({"default": shipped["default"], "large_n": large}))


def fine_nmi(database: Path, dataset: str, run_config: str, real_only: bool) -> float:
    from clustering_dagster.core.clustering.evaluate import agreement

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


def one(dataset: str, run_config: str, database: Path, work: Path) -> None:
    """Materialise one partition of `work`'s datasets in a fresh DuckDB file; print its figures
    as JSON."""
    configs = work / CONFIGS
    os.environ["CLUSTERING_RUN_CONFIGS"] = str(configs)
    for stale in (database, database.with_suffix(".duckdb.wal")):
        stale.unlink(missing_ok=True)
    result = materialise(database, work / DATASETS, dataset, run_config, configs, tree_assets())
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


def run_child(work: Path, dataset: str, run_config: str) -> dict:
    """`one` in a child process (as `python -m benchmarks.scale --one`), and its result."""
    database = work / f"scale_{dataset}_{run_config}.duckdb"
    command = [sys.executable, "-m", "benchmarks.scale", "--one", dataset]
    command += ["--run-config", run_config, "--db", str(database), "--work", str(work)]
    done = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    if done.returncode:
        raise SystemExit(f"{dataset} | {run_config} failed ({done.returncode})")
    database.unlink(missing_ok=True)  # a million rows of results: gigabytes
    return json.loads(done.stdout.strip().splitlines()[-1])


def encode_overhead(
    work: Path, texts: list[str], rounds: int = ENCODE_ROUNDS
) -> tuple[float, float, float]:
    """(pipeline seconds, bare seconds, their ratio) for encoding the same distinct texts: the
    median of `rounds` rounds, each a bare encode then the embeddings asset in a fresh file,
    side by side so that both see the same load on a shared machine. The bare encode is
    `make_encoder`'s for the default settings: `SentenceTransformer.encode` of the model object
    the embeddings asset then uses (loaded once, cached)."""
    from clustering_dagster.core.config.run_config import EmbeddingConfig
    from clustering_dagster.core.embedding.embed import make_encoder

    encode = make_encoder(EmbeddingConfig())
    encode(texts[:256])  # warm up
    folder = work / "scale_encode_datasets"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    pl.DataFrame({"text": texts}).write_csv(folder / "encode.csv")
    database = work / "scale_encode.duckdb"
    bare, pipeline = [], []
    for _ in range(rounds):
        began = time.perf_counter()
        encode(texts)
        bare.append(time.perf_counter() - began)
        database.unlink(missing_ok=True)
        result = materialise(
            database, folder, "encode", "default", assets=tree_assets(["raw_texts", "embeddings"])
        )
        pipeline.append(result["assets"]["embeddings"]["embedding_seconds"])
        print(f"encode round: bare {bare[-1]:.1f} s, pipeline {pipeline[-1]:.1f} s", flush=True)
    return float(np.median(pipeline)), float(np.median(bare)), np.median(pipeline) / np.median(bare)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--skip-nmi", action="store_true")
    parser.add_argument("--skip-encode", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="a few hundred texts, for the tests")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--run-config", default="default", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, default=OUT, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args.one, args.run_config, Path(args.db), args.work)
        return
    if not args.smoke:
        run(OUT, args, None, [int(s) for s in args.sizes.split(",")], NMI_ROUNDS, LARGE_N_SAMPLE,
            ENCODE_TEXTS, ENCODE_ROUNDS)  # fmt: skip
        return
    with tempfile.TemporaryDirectory(prefix="scale_smoke_") as tmp:
        run(Path(tmp), args, SMOKE["texts"], SMOKE["sizes"], SMOKE["nmi_rounds"],
            SMOKE["large_n_sample"], SMOKE["encode_texts"], SMOKE["encode_rounds"])  # fmt: skip


def run(
    work: Path,
    args: argparse.Namespace,
    source_texts: int | None,
    sizes: list[int],
    nmi_rounds: int,
    large_n_sample: int,
    encode_texts: int,
    encode_rounds: int,
) -> None:
    """The benchmark in `work` (OUT, or a temporary folder): Banking77 (or `source_texts` of it)
    grown to `sizes`, the NMI rounds and the encoding rounds; prints the figures."""
    work.mkdir(parents=True, exist_ok=True)
    (work / DATASETS).mkdir(parents=True, exist_ok=True)
    write_configs(work / CONFIGS, large_n_sample)
    texts, vectors = banking77(work, source_texts)
    for n in sizes:
        write_dataset(work / DATASETS, f"b77_{n}", n, texts, vectors)
    write_dataset(work / DATASETS, "banking77_vectors", len(texts), texts, vectors)
    rows = {n: run_child(work, f"b77_{n}", "default") for n in sizes}
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
        for _ in range(nmi_rounds):  # side by side: UMAP's threads make every fit differ
            today.append(run_child(work, "banking77_vectors", "default")["nmi_real"])
            large.append(run_child(work, "banking77_vectors", "large_n")["nmi_real"])
        nmi_drop = float(np.mean(today) - np.mean(large))
        print(
            f"Banking77 ({len(texts):,} texts) alone, fine NMI over {nmi_rounds} rounds: UMAP on all "
            f"{' '.join(f'{x:.3f}' for x in today)} (mean {np.mean(today):.3f}), large-N path "
            f"(sample {large_n_sample}) {' '.join(f'{x:.3f}' for x in large)} (mean "
            f"{np.mean(large):.3f}): drop {nmi_drop:.3f}"
        )
    overhead = None
    if not args.skip_encode:
        distinct = texts["text"].unique(maintain_order=True).head(encode_texts).to_list()
        pipeline, bare, overhead = encode_overhead(work, distinct, encode_rounds)
        print(
            f"encoding {len(distinct)} texts: pipeline {pipeline:.1f} s, bare "
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
