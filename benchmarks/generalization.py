"""Does the finest level find topics at their natural size on data nobody tuned for? The real
pipeline with the shipped `default` run configuration on Banking77, HWU64, the two concatenated
(labels prefixed, so the sets stay apart) and random subsamples of 1,000 and 3,000 texts of each;
beside it, KMeans given the true number of intents on the same (normalised MiniLM) embeddings,
n_init 3, fixed seed.

Prints per set: texts, true k, fine clusters found, the levels above, NMI / ARI of the fine level
and of KMeans. The last line is one JSON object: `min_nmi_margin` and `min_ari_margin` (fine
minus KMeans, the worst set), `min_count_ratio` and `max_count_ratio` (fine clusters / true k),
`union_nmi`, `union_ari`, and the seconds. The vectors are kept in
`benchmarks/out/generalization.duckdb` between runs; every run projects and clusters afresh.

Usage, from the repository root: python -m benchmarks.generalization [--smoke]
(--smoke: 300-text sets, about a minute; `benchmarks/out/generalization_smoke.duckdb`)
"""

import argparse
import json
import time

import numpy as np
import polars as pl

from benchmarks.common import OUT, REPO, forget_projections, machine, materialise, published_levels

DATABASE = OUT / "generalization.duckdb"
FOLDER = OUT / "generalization_datasets"


def labelled_sets(smoke: bool) -> dict[str, pl.DataFrame]:
    """name -> (text, label): the whole sets, their concatenation and the subsamples."""
    banking = pl.concat(
        pl.read_csv(REPO / "data" / "banking77" / f"{part}.csv") for part in ("train", "test")
    ).select("text", label="b77:" + pl.col("category"))
    hwu = pl.read_csv(REPO / "data" / "hwu64" / "hwu64.csv").select(
        "text", label="hwu:" + pl.col("intent")
    )
    if smoke:
        banking, hwu = banking.sample(300, seed=0), hwu.sample(300, seed=0)
        return {"banking77": banking, "hwu64": hwu, "union": pl.concat([banking, hwu])}
    sets = {"banking77": banking, "hwu64": hwu, "union": pl.concat([banking, hwu])}
    for name, frame in (("banking77", banking), ("hwu64", hwu)):
        for size in (1000, 3000):
            sets[f"{name}_{size // 1000}k"] = frame.sample(size, seed=size)
    return sets


def kmeans_scores(database, dataset: str, fine: pl.DataFrame, k: int) -> tuple[float, float]:
    """KMeans with the true k on the partition's own stored (normalised) vectors, scored on the
    same texts as the fine level (`fine`: row_idx, ground_truth)."""
    import duckdb
    from sklearn.cluster import KMeans

    from clustering_dagster.core.clustering.evaluate import agreement
    from clustering_dagster.core.storage.store import Partition, partition_vectors

    with duckdb.connect(str(database), read_only=True) as conn:
        rows, vectors = partition_vectors(conn, Partition(dataset, "default"))
    predicted = KMeans(n_clusters=k, n_init=3, random_state=0).fit_predict(vectors)
    scored = rows.select("row_idx").with_columns(kmeans=predicted).join(fine, on="row_idx")
    result = agreement(scored["ground_truth"].to_numpy(), scored["kmeans"].to_numpy())
    return result["nmi"], result["ari"]


def main() -> None:
    from clustering_dagster.core.clustering.evaluate import agreement

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="300-text sets, for the tests")
    args = parser.parse_args()
    database = DATABASE.with_name("generalization_smoke.duckdb") if args.smoke else DATABASE
    FOLDER.mkdir(parents=True, exist_ok=True)
    if database.exists():
        forget_projections(database)  # every run projects afresh: UMAP's spread is part of it
    started = time.perf_counter()
    rows = []
    for name, frame in labelled_sets(args.smoke).items():
        key = f"{name}_smoke" if args.smoke else name
        frame.write_csv(FOLDER / f"{key}.csv")
        (FOLDER / f"{key}.yaml").write_text("label_column: label\n")
        seconds = materialise(database, FOLDER, key, "default")["seconds"]
        levels = published_levels(database, key, "default")
        fine_level = levels["level"].max()
        fine = levels.filter(pl.col("level") == fine_level).sort("row_idx")
        truth = fine["ground_truth"].to_numpy()
        k = len(np.unique(truth))
        found = agreement(truth, fine["cluster_id"].to_numpy())
        km_nmi, km_ari = kmeans_scores(database, key, fine, k)
        upper = (
            levels.filter(pl.col("level") < fine_level)
            .group_by("level", "level_name")
            .agg(nodes=pl.col("cluster_id").n_unique())
            .sort("level")
        )
        rows.append({
            "set": name, "texts": fine.height, "true_k": k,
            "fine_clusters": int(fine["cluster_id"].n_unique()),
            "levels_above": " ".join(f"{n}:{c}" for _, n, c in upper.iter_rows()),
            "nmi": round(found["nmi"], 3), "ari": round(found["ari"], 3),
            "kmeans_nmi": round(km_nmi, 3), "kmeans_ari": round(km_ari, 3),
            "seconds": round(seconds, 1),
        })  # fmt: skip
        print(rows[-1], flush=True)
    table = pl.DataFrame(rows)
    print(machine())
    with pl.Config(tbl_rows=50, tbl_width_chars=200, fmt_str_lengths=60):
        print(table)
    union = table.filter(pl.col("set") == "union").row(0, named=True)
    ratio = table["fine_clusters"] / table["true_k"]
    print(json.dumps({
        "min_nmi_margin": round(float((table["nmi"] - table["kmeans_nmi"]).min()), 3),
        "min_ari_margin": round(float((table["ari"] - table["kmeans_ari"]).min()), 3),
        "min_count_ratio": round(float(ratio.min()), 3),
        "max_count_ratio": round(float(ratio.max()), 3),
        "union_nmi": union["nmi"], "union_ari": union["ari"],
        "sets": table.height, "seconds": round(time.perf_counter() - started, 1),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
