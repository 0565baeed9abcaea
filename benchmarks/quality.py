"""Quality and speed of the real pipeline on all 13,083 Banking77 queries.

Runs three materialisations of every asset, each in a fresh process with a fresh Dagster instance,
against one temporary DuckDB file:
  cold    nothing cached: embedding, UMAP (with numba compilation), clustering, labels
  warm    embeddings cached, projection recomputed (its rows are deleted first)
  rerun   nothing changed: embeddings cached and the projection reused
Prints per level the cluster count, NMI, ARI and the share HDBSCAN left unassigned; the last line
is one JSON object.

Usage, from the repository root: python -m benchmarks.quality [--run-config default] [--smoke]
(--smoke: 400 random Banking77 queries instead of all of them; about a minute)
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl

from benchmarks.common import (
    LABELLED,
    REPO,
    forget_projections,
    link_datasets,
    machine,
    materialise,
    published_levels,
)

SMOKE_TEXTS = 400


def level_figures(database: Path, run_config: str) -> list[dict]:
    import numpy as np

    from clustering_dagster.core.clustering.evaluate import agreement

    frame = published_levels(database, "banking77", run_config)
    figures = []
    for (_, name), rows in frame.group_by("level", "level_name", maintain_order=True):
        scores = agreement(rows["ground_truth"].to_numpy(), rows["cluster_id"].to_numpy())
        figures.append(
            {
                "level": name,
                "clusters": rows["cluster_id"].n_unique(),
                "texts": rows.height,
                "nmi": round(scores["nmi"], 4),
                "ari": round(scores["ari"], 4),
                "unassigned_share": round(float(np.mean(rows["noise"].to_numpy())), 4),
            }
        )
    return figures


def run_phase(phase: str, workdir: Path, run_config: str) -> float:
    """Run one phase in a fresh interpreter, as a Dagster run would be."""
    command = [sys.executable, "-m", "benchmarks.quality", "--phase", phase]
    command += ["--workdir", str(workdir), "--run-config", run_config]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode:  # its log only when it failed: Dagster's is long
        sys.stderr.write(done.stderr[-20_000:])
        raise SystemExit(f"the {phase} phase failed ({done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-config", default="default")
    parser.add_argument("--phase", choices=["cold", "warm", "rerun"])
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--smoke", action="store_true", help="a few hundred texts, for the tests")
    args = parser.parse_args()
    if args.phase:
        if args.phase == "warm":
            forget_projections(args.workdir / "bench.duckdb")
        result = materialise(
            args.workdir / "bench.duckdb", args.workdir / "datasets", "banking77", args.run_config
        )
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.smoke:
            source, spec = LABELLED["banking77"]
            frame = pl.concat(pl.read_csv(f) for f in sorted(source.glob("*.csv")))
            (workdir / "datasets").mkdir()
            frame.sample(SMOKE_TEXTS, seed=0).write_csv(workdir / "datasets" / "banking77.csv")
            (workdir / "datasets" / "banking77.yaml").write_text(spec)
        else:
            link_datasets(workdir / "datasets", ["banking77"])
        times = {
            phase: run_phase(phase, workdir, args.run_config) for phase in ("cold", "warm", "rerun")
        }
        figures = level_figures(workdir / "bench.duckdb", args.run_config)
    print(machine())
    print(f"run config: {args.run_config}; texts: {figures[0]['texts']:,}")
    print(f"{'level':10s} {'clusters':>8s} {'NMI':>6s} {'ARI':>6s} {'unassigned':>10s}")
    for f in figures:
        print(
            f"{f['level']:10s} {f['clusters']:8d} {f['nmi']:6.3f} {f['ari']:6.3f} "
            f"{f['unassigned_share']:10.3f}"
        )
    print(
        f"cold {times['cold']:.1f} s, warm (embeddings cached) {times['warm']:.1f} s, "
        f"rerun (projection reused) {times['rerun']:.1f} s"
    )
    best = max(figures, key=lambda f: f["nmi"])
    print(
        json.dumps(
            {
                "nmi": best["nmi"],
                "ari": best["ari"],
                "clusters": best["clusters"],
                "cold_s": round(times["cold"], 1),
                "warm_s": round(times["warm"], 1),
                "rerun_s": round(times["rerun"], 1),
            }
        )
    )


if __name__ == "__main__":
    main()
