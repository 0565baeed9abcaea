"""Quality and speed of the real pipeline on all 13,083 Banking77 queries.

Runs three materialisations of every asset, each in a fresh process with a fresh Dagster instance,
against one temporary DuckDB file:
  cold    nothing cached: embedding, UMAP (with numba compilation), clustering, labels
  warm    embeddings cached, projection recomputed (its rows are deleted first)
  rerun   nothing changed: embeddings cached and the projection reused
Prints per level the cluster count, NMI, ARI and the share HDBSCAN left unassigned; the last line
is one JSON object. Usage: python benchmarks/quality.py [--run-config default]
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BANKING77 = REPO / "data" / "banking77"


def materialise(workdir: Path, run_config: str) -> dict:
    """One materialisation in this process; returns its wall time and per-level figures."""
    from dagster import DagsterInstance, materialize
    from dagster_duckdb import DuckDBResource

    from clustering_dagster.assets import ALL_ASSETS
    from clustering_dagster.partitions import partition_key
    from clustering_dagster.resources import ClusteringSettings

    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("dataset", ["banking77"])
        started = time.perf_counter()
        result = materialize(
            ALL_ASSETS,
            instance=instance,
            partition_key=partition_key("banking77", run_config),
            resources={
                "duckdb": DuckDBResource(database=str(workdir / "bench.duckdb")),
                "clustering": ClusteringSettings(datasets_dir=str(workdir / "datasets")),
            },
        )
        seconds = time.perf_counter() - started
    stats = {}
    for event in result.get_asset_materialization_events():
        metadata = event.materialization.metadata
        stats[event.materialization.asset_key.to_user_string()] = {
            k: v.value for k, v in metadata.items() if k != "map"
        }
    return {"seconds": seconds, "assets": stats}


def level_figures(workdir: Path, run_config: str) -> list[dict]:
    import duckdb
    import numpy as np

    from clustering_dagster.core.evaluate import agreement

    with duckdb.connect(str(workdir / "bench.duckdb"), read_only=True) as conn:
        frame = conn.execute(
            "SELECT a.level, a.level_name, a.cluster_id, a.noise, t.ground_truth "
            "FROM clustering.assignments a JOIN clustering.texts t USING (dataset, run_config, row_idx) "
            "WHERE dataset = 'banking77' AND run_config = ? ORDER BY a.level, a.row_idx",
            [run_config],
        ).pl()
    figures = []
    for (_, name), rows in frame.group_by("level", "level_name", maintain_order=True):
        scores = agreement(rows["ground_truth"].to_numpy(), rows["cluster_id"].to_numpy())
        figures.append(
            {
                "level": name,
                "clusters": int(rows["cluster_id"].max()) + 1,
                "nmi": round(scores["nmi"], 4),
                "ari": round(scores["ari"], 4),
                "unassigned_share": round(float(np.mean(rows["noise"].to_numpy())), 4),
            }
        )
    return figures


def run_phase(phase: str, workdir: Path, run_config: str) -> float:
    """Run one phase in a fresh interpreter, as a Dagster run would be."""
    output = subprocess.run(
        [
            sys.executable,
            __file__,
            "--phase",
            phase,
            "--workdir",
            str(workdir),
            "--run-config",
            run_config,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-config", default="default")
    parser.add_argument("--phase", choices=["cold", "warm", "rerun"])
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    if args.phase:
        if args.phase == "warm":
            import duckdb

            with duckdb.connect(str(args.workdir / "bench.duckdb")) as conn:
                conn.execute("DELETE FROM clustering.projections")
        print(json.dumps(materialise(args.workdir, args.run_config)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "datasets").mkdir()
        (workdir / "datasets" / "banking77").symlink_to(BANKING77)
        (workdir / "datasets" / "banking77.yaml").write_text("label_column: category\n")
        times = {
            phase: run_phase(phase, workdir, args.run_config) for phase in ("cold", "warm", "rerun")
        }
        figures = level_figures(workdir, args.run_config)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"run config: {args.run_config}; texts: 13,083")
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
