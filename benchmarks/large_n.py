"""The large-N path against the small one, and what each of its parts is worth, on Banking77.

All 13,083 Banking77 queries (their MiniLM vectors, embedded once into scale.py's source file),
the shipped `default` fine level, NMI against the 77 intents. Per round, side by side:

- `all`: UMAP on every text, HDBSCAN on every text (the path below `fit_sample`);
- `large_n`: the shipped large-N path with a sample of SAMPLE texts: UMAP fitted on the sample's
  representatives, HDBSCAN on the sample, every other text voted in;
- `no_representatives`: the same with UMAP fitted on the sampled texts themselves;
- `hdbscan_on_placed`: the large-N projection, then HDBSCAN on every text's placed coordinates;
- `sampled_hdbscan`: UMAP on every text, HDBSCAN on a random SAMPLE, the others voted in.

Each round draws new samples (and UMAP, multi-threaded, differs on every fit), so the figures are
means over ROUNDS rounds. The last line is one JSON object: the mean fine NMI per variant.

Usage, from the repository root:
    python -m benchmarks.large_n [--rounds 3] [--sample 5000]
    python -m benchmarks.large_n --smoke   (600 random Banking77 queries embedded in a temporary
        folder, a sample of 300, one round: about a minute)
"""

import argparse
import json
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np

from benchmarks.common import REPO, machine
from benchmarks.scale import banking77
from clustering_dagster.core.clustering.cluster import fit_levels
from clustering_dagster.core.clustering.evaluate import agreement
from clustering_dagster.core.config.run_config import load_run_configs
from clustering_dagster.core.embedding.embed import normalise_rows
from clustering_dagster.core.projection import project as projection
from clustering_dagster.core.projection.neighbourhood import resolved_projection

VARIANTS = ["all", "large_n", "no_representatives", "hdbscan_on_placed", "sampled_hdbscan"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sample", type=int, default=5_000)
    parser.add_argument("--smoke", action="store_true", help="600 texts, sample 300, one round")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.sample = 1, 300
        with tempfile.TemporaryDirectory(prefix="large_n_smoke_") as tmp:
            texts, vectors = banking77(Path(tmp), 600)
    else:
        texts, vectors = banking77()
    vectors = normalise_rows(vectors)
    truth = texts["category"].to_numpy()
    default = load_run_configs(REPO / "data" / "run_configs.yaml")["default"]
    fine = [default.levels[-1]]
    everything = resolved_projection(default, len(vectors))
    with_sample = default.projection.model_copy(update={"fit_sample": args.sample})
    sampled = resolved_projection(
        default.model_copy(update={"projection": with_sample}), len(vectors)
    )

    def nmi(space, fitted=None) -> float:
        labels = fit_levels(space, vectors, fine, None, fitted)[0].labels
        return agreement(truth, labels)["nmi"]

    scores = {name: [] for name in VARIANTS}
    for round_ in range(args.rounds):
        full = projection.project(vectors, everything)
        large = projection.project(vectors, sampled)
        with mock.patch.object(projection, "representatives", lambda space, s: space[s]):
            plain = projection.project(vectors, sampled)
        some = np.zeros(len(vectors), bool)
        some[np.random.default_rng(round_).choice(len(vectors), args.sample, replace=False)] = True
        scores["all"].append(nmi(full.cluster_space))
        scores["large_n"].append(nmi(large.cluster_space, large.fitted))
        scores["no_representatives"].append(nmi(plain.cluster_space, plain.fitted))
        scores["hdbscan_on_placed"].append(nmi(large.cluster_space))
        scores["sampled_hdbscan"].append(nmi(full.cluster_space, some))
        print(f"round {round_}: " + ", ".join(f"{k} {v[-1]:.4f}" for k, v in scores.items()))
    print(machine())
    print(f"{len(vectors):,} texts, sample {args.sample:,}, {args.rounds} rounds, mean fine NMI:")
    means = {name: round(float(np.mean(values)), 4) for name, values in scores.items()}
    for name, value in means.items():
        print(f"  {name:20s} {value:.4f}  (drop {means['all'] - value:+.4f})")
    print(json.dumps(means))


if __name__ == "__main__":
    main()
