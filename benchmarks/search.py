"""Latency of semantic search (`clustering-dagster search`) on all of Banking77 and on 100,000 texts.

Builds, once, `benchmarks/out/search.duckdb`: all 13,083 Banking77 queries materialised by the real
pipeline (`default` run configuration, every asset, so `benchmarks/out/maps/` gets the map too);
and `benchmarks/out/search_100k.duckdb`: a copy of it with a partition `banking77_100k` holding
those queries plus 86,917 synthetic copies, each a real query's stored vector plus Gaussian noise
(cosine about 0.9 to its original), renormalised, with the original's clusters. Then, with the
model loaded, times 20 queries per partition as the command runs them (open the file read-only,
read the tree, embed the query, rank clusters and texts, name the hits' clusters) and prints the
medians; the last line is one JSON object.

Usage, from the repository root: python -m benchmarks.search [--rebuild] [--smoke]
(--smoke: 400 queries of the shipped sample and 2,000 texts in a temporary folder, built
afresh every time, 5 queries; a minute or two)
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
DATABASE = OUT / "search.duckdb"
DATABASE_100K = OUT / "search_100k.duckdb"
BANKING77 = REPO / "data" / "banking77"
TOTAL = 100_000
NOISE = 0.5  # norm of the noise added to a unit vector: cosine to the original ~ 1/sqrt(1.25)
COPIED = ["assignments", "cluster_centroids", "cluster_labels", "hierarchy"]
SAMPLE = REPO / "data" / "datasets" / "banking77_sample.csv"
SMOKE_TEXTS = 400  # of the shipped sample
SMOKE_TOTAL = 2_000
SMOKE_QUERIES = 5

QUERIES = [
    "my card has not arrived yet",
    "how do I top up with apple pay",
    "why was I charged a fee for a transfer",
    "the exchange rate on my payment looks wrong",
    "I want a refund for something I bought",
    "can I get a virtual card",
    "my transfer is still pending",
    "someone stole my card",
    "how old do I have to be to open an account",
    "I forgot my PIN",
    "the ATM kept my card",
    "cash withdrawal shows the wrong amount",
    "how do I verify my identity",
    "cancel a transfer I just made",
    "my top up failed",
    "which currencies can I hold",
    "change my personal details",
    "is there a fee for using my card abroad",
    "I was charged twice for the same purchase",
    "close my account",
]


def materialise_banking77(database: Path, datasets: Path, source: Path = BANKING77) -> None:
    """Banking77 (`source`: the folder of all of it, or a CSV of some of it) through every asset
    into `database`, as `dagster asset materialize` would run them."""
    from dagster import DagsterInstance, materialize

    from clustering_dagster.assets import ALL_ASSETS
    from clustering_dagster.partitions import partition_key
    from clustering_dagster.resources import ClusteringSettings, DuckDBStore

    datasets.mkdir(parents=True, exist_ok=True)
    link = datasets / ("banking77" + source.suffix)
    if not link.exists():
        link.symlink_to(source)
    (datasets / "banking77.yaml").write_text("label_column: category\n")
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("dataset", ["banking77"])
        result = materialize(
            ALL_ASSETS,
            instance=instance,
            partition_key=partition_key("banking77", "default"),
            resources={
                "duckdb": DuckDBStore(database=str(database)),
                "clustering": ClusteringSettings(datasets_dir=str(datasets)),
            },
        )
    assert result.success


def add_noisy_copies(database: Path, source, target, total: int, seed: int = 0) -> None:
    """Publish `target` in `database`: the texts of `source` and noisy copies of them up to
    `total` texts."""
    from clustering_dagster.core.data_in.ingest import text_hash
    from clustering_dagster.core.embedding.embed import normalise_rows
    from clustering_dagster.core.storage.snapshots import mark_written, publish_if_complete
    from clustering_dagster.core.storage.store import (
        Partition,
        connect,
        partition_model,
        put_vectors,
        read_partition,
        transaction,
        vectors_for,
        write_version,
    )

    target = Partition(target.dataset, target.run_config, "benchmark")  # the version it writes
    with connect(database) as conn:
        model, dim = partition_model(conn, source)
        texts = read_partition(conn, "texts", source, "* EXCLUDE (dataset, run_config)", "row_idx")
        vectors = normalise_rows(vectors_for(conn, model, texts["text_hash"]))
        copied = {
            t: read_partition(conn, t, source, "* EXCLUDE (dataset, run_config)", "1")
            for t in COPIED
        }
        rng = np.random.default_rng(seed)
        pick = rng.integers(0, texts.height, total - texts.height)
        noisy = normalise_rows(
            vectors[pick] + rng.normal(0, NOISE / np.sqrt(dim), (len(pick), dim)).astype(np.float32)
        )
        copies = texts[pick].with_columns(
            row_idx=pl.int_range(texts.height, total, dtype=pl.Int32),
            text=pl.col("text") + pl.format(" (copy {})", pl.int_range(len(pick))),
            duplicate_of=pl.lit(None, pl.Int32),
        )
        copies = copies.with_columns(
            text_hash=text_hash(copies["text"]), text_id=pl.format("copy:{}", "row_idx")
        )
        put_vectors(conn, model, copies["text_hash"], noisy)
        all_texts = pl.concat([texts, copies])
        copy_of = copies.select("row_idx", "text_hash").with_columns(
            original=texts["row_idx"].gather(pick)
        )
        assignments = copied["assignments"]
        renamed = assignments.drop("text_hash").rename({"row_idx": "original"})
        extra = copy_of.join(renamed, on="original").select(assignments.columns)
        copied["assignments"] = pl.concat([assignments, extra])
        embeddings = all_texts.select(
            "row_idx", "text_hash", model=pl.lit(model), dim=pl.lit(dim, pl.Int32)
        )
        tables = {"texts": all_texts, "embeddings": embeddings, **copied}
        with transaction(conn):
            for table, frame in tables.items():
                write_version(conn, table, target, frame)
            mark_written(conn, target, "benchmark", list(tables))
            publish_if_complete(conn, target, {"benchmark"}, set())


def published(database: Path, part) -> bool:
    import duckdb

    if not database.exists():
        return False
    with duckdb.connect(str(database), read_only=True) as conn:
        return bool(
            conn.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'clustering' "
                "AND table_name = 'published'"
            ).fetchone()[0]
            and conn.execute(
                "SELECT count(*) FROM clustering.published WHERE dataset = ? AND run_config = ? "
                "AND table_name = 'hierarchy'",
                [part.dataset, part.run_config],
            ).fetchone()[0]
        )


def one_search(searcher, part, query: str) -> dict:
    """What `clustering-dagster search QUERY -d DATASET` does per query once its model is loaded:
    look up the partition's published versions (its index is read only the first time, and
    again after a run publishes), embed the query, rank clusters and texts."""
    from clustering_dagster.core.results.search import search_clusters, search_texts

    started = time.perf_counter()
    index = searcher.index(part)
    vector = searcher.embed(index, query)
    embedded = time.perf_counter()
    clusters = search_clusters(index, vector, 10)
    ranked = time.perf_counter()
    hits = search_texts(index, vector, 10)
    finished = time.perf_counter()
    assert clusters.height == 10 and hits.height == 10
    return {
        "total_ms": 1000 * (finished - started),
        "embed_ms": 1000 * (embedded - started),
        "clusters_ms": 1000 * (ranked - embedded),
        "texts_ms": 1000 * (finished - ranked),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rebuild", action="store_true", help="start from an empty database")
    parser.add_argument("--smoke", action="store_true", help="a few hundred texts, for the tests")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if not args.smoke:
        run(DATABASE, DATABASE_100K, OUT / "datasets", BANKING77, TOTAL, QUERIES, args.rebuild)
        return
    with tempfile.TemporaryDirectory(prefix="search_smoke_") as tmp:
        folder = Path(tmp)
        source = folder / "banking77_smoke.csv"
        pl.read_csv(SAMPLE).sample(SMOKE_TEXTS, seed=0).write_csv(source)
        run(folder / "search.duckdb", folder / "search_100k.duckdb", folder / "datasets", source,
            SMOKE_TOTAL, QUERIES[:SMOKE_QUERIES], rebuild=True)  # fmt: skip


def run(
    database: Path,
    database_100k: Path,
    datasets: Path,
    source: Path,
    total: int,
    queries: list[str],
    rebuild: bool,
) -> None:
    """Build the two files unless they hold their partitions (or `rebuild`), then time the
    queries on each and print the figures."""
    from clustering_dagster.core.results.reading import read_only
    from clustering_dagster.core.results.search import QueryEncoder, Searcher
    from clustering_dagster.core.results.search_index import embedding_config
    from clustering_dagster.core.storage.store import Partition

    banking77 = Partition("banking77", "default")
    copies = Partition("banking77_100k", "default")
    if rebuild:
        for stale in (database, database_100k):
            stale.unlink(missing_ok=True)
            Path(f"{stale}.wal").unlink(missing_ok=True)
    database.parent.mkdir(parents=True, exist_ok=True)
    if not published(database, banking77):
        started = time.perf_counter()
        materialise_banking77(database, datasets, source)
        print(f"materialised Banking77 ({source.name}) in {time.perf_counter() - started:.0f} s")
    if not published(database_100k, copies):
        started = time.perf_counter()
        shutil.copyfile(database, database_100k)
        add_noisy_copies(database_100k, banking77, copies, total)
        print(
            f"built {total:,} texts (real + noisy copies) in {time.perf_counter() - started:.0f} s"
        )

    encoder = QueryEncoder()
    with read_only(database) as conn:
        config = embedding_config(conn, banking77)
    encoder(config, ["load the model before timing"])
    results = {}
    for name, path, part in [
        ("banking77", database, banking77),
        ("100k", database_100k, copies),
    ]:
        searcher = Searcher(path, encoder)
        first = one_search(searcher, part, queries[0])  # reads the partition's index
        runs = [one_search(searcher, part, query) for query in queries]
        results[name] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        results[name] |= {
            "slowest_ms": max(r["total_ms"] for r in runs),
            "first_ms": first["total_ms"],
            "texts": searcher.index(part).texts.height,
            "dataset": part.dataset,
        }
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"median of {len(queries)} queries, model loaded, ms: total (embed + clusters + texts)")
    for r in results.values():
        print(
            f"{r['dataset']:15s} {r['texts']:7,d} distinct texts: {r['total_ms']:6.1f} "
            f"(embed {r['embed_ms']:.1f}, clusters {r['clusters_ms']:.1f}, "
            f"texts {r['texts_ms']:.1f}; slowest {r['slowest_ms']:.1f}; first query, reading "
            f"the index, {r['first_ms']:.0f})"
        )
    print(
        json.dumps(
            {
                "search_ms_banking77": round(results["banking77"]["total_ms"], 1),
                "search_ms_100k": round(results["100k"]["total_ms"], 1),
                "first_query_ms_banking77": round(results["banking77"]["first_ms"], 1),
                "first_query_ms_100k": round(results["100k"]["first_ms"], 1),
                "texts_banking77": results["banking77"]["texts"],
                "texts_100k": results["100k"]["texts"],
            }
        )
    )


if __name__ == "__main__":
    main()
