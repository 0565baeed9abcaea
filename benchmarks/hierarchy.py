"""The whole tree, not only its leaves: the real pipeline on HWU64, all of Banking77 and the shipped
sample, with the default run configuration and two other ways of building the upper levels.

Every (dataset, run configuration) is materialised through every asset in this process, against
`benchmarks/out/hierarchy.duckdb` (kept: a rerun reuses the vectors and, unless --reproject, the
projections). Run configurations: `default` (the shipped one: as many levels above the HDBSCAN
clusters as they need, merged by Ward's method), `average` (the same, average linkage) and `hdbscan_levels`
(the former default: HDBSCAN fitted per level and nested by majority).

Prints per level: nodes, the largest node's share of the texts, children per node, NMI and ARI
against the fine labels (intents) and, for HWU64, against the scenarios, and the share of labels
holding a function word of issue 8's list (ISSUE_FUNCTION_WORDS, shared with the tests). The last line is one JSON object (default
configuration); `hwu64_top_scenario_*` is the best upper level with 10 to 30 nodes.

Usage, from the repository root:
    python -m benchmarks.hierarchy [--reproject] [--datasets hwu64,banking77,banking77_sample]
    python -m benchmarks.hierarchy --smoke   (200 random texts of each dataset, every
        configuration, in a temporary folder: a minute or two)
"""

import argparse
import copy
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import yaml

from benchmarks.common import (
    LABELLED,
    OUT,
    REPO,
    forget_projections,
    link_datasets,
    machine,
    materialise,
    published_levels,
)
from clustering_dagster_tests.support.vocabulary import ISSUE_FUNCTION_WORDS

DATABASE = OUT / "hierarchy.duckdb"
DATASETS = ["hwu64", "banking77", "banking77_sample"]
SMOKE_TEXTS = 200


def run_configs(path: Path) -> list[str]:
    """The shipped configurations plus the alternatives for the upper levels, written to `path`."""
    shipped = yaml.safe_load((REPO / "data" / "run_configs.yaml").read_text())
    default = shipped["default"]
    average = copy.deepcopy(default)
    average["upper_levels"]["linkage"] = "average"
    former = copy.deepcopy(default)
    former.pop("upper_levels")
    former["levels"] = [
        {"name": "coarse", "method": "hdbscan", "min_cluster_size": 0.04, "min_samples": 10},
        {"name": "medium", "method": "hdbscan", "min_cluster_size": 0.015, "min_samples": 10},
        {
            "name": "fine",
            "method": "hdbscan",
            "min_cluster_size": 0.0045,
            "min_samples": 10,
            "cluster_selection_method": "leaf",
        },
    ]
    configs = {"default": default, "average": average, "hdbscan_levels": former}
    path.write_text(yaml.safe_dump(configs, sort_keys=False))
    return list(configs)


def scores(truth: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    from clustering_dagster.core.clustering.evaluate import agreement

    result = agreement(truth, predicted)
    return round(result["nmi"], 3), round(result["ari"], 3)


def has_function_word(label: str) -> bool:
    return bool(set(re.findall(r"[a-z0-9]+", label.lower())) & ISSUE_FUNCTION_WORDS)


def smoke_datasets(folder: Path, n: int) -> Path:
    """A datasets folder holding `n` random texts of each labelled dataset (same names,
    same YAML)."""
    folder.mkdir(parents=True, exist_ok=True)
    for key in DATASETS:
        source, spec = LABELLED[key]
        files = sorted(source.glob("*.csv")) if source.is_dir() else [source]
        frame = pl.concat(pl.read_csv(f) for f in files)
        frame.sample(min(n, frame.height), seed=0).write_csv(folder / f"{key}.csv")
        (folder / f"{key}.yaml").write_text(spec)
    return folder


def level_table(database: Path, dataset: str, run_config: str) -> list[dict]:
    """Per level: nodes, largest share, children per node, agreement, function-word labels."""
    import duckdb

    frame = published_levels(database, dataset, run_config)
    with duckdb.connect(str(database), read_only=True) as conn:
        labels = conn.execute(
            "SELECT level, label FROM clustering.cluster_labels "
            "WHERE dataset = ? AND run_config = ?",
            [dataset, run_config],
        ).pl()
        tree = conn.execute(
            "SELECT level, n_children FROM clustering.hierarchy WHERE dataset = ? AND run_config = ?",
            [dataset, run_config],
        ).pl()
    levels = frame.partition_by("level", maintain_order=True)
    scenario = None
    if dataset == "hwu64":
        scenario = levels[0]["metadata"].str.json_path_match("$.scenario").to_numpy()
    rows = []
    for depth, level in enumerate(levels):
        ids = level["cluster_id"].to_numpy()
        named = labels.filter(pl.col("level") == depth)["label"]
        children = tree.filter(pl.col("level") == depth)["n_children"]
        row = {
            "level": level["level_name"][0],
            "nodes": int(len(np.unique(ids))),
            "largest_share": round(
                float(np.bincount(np.unique(ids, return_inverse=True)[1]).max()) / len(ids), 3
            ),
            "children": f"{children.min()}-{children.max()}" if depth < len(levels) - 1 else "",
            "fine": scores(level["ground_truth"].to_numpy(), ids),
            "function_word_labels": round(float(np.mean([has_function_word(x) for x in named])), 3),
            "labels": len(named),
            "function_word_count": int(sum(has_function_word(x) for x in named)),
        }
        if scenario is not None:
            row["scenario"] = scores(scenario, ids)
        rows.append(row)
    return rows


def print_table(dataset: str, run_config: str, rows: list[dict], seconds: float) -> None:
    print(f"\n{dataset} | {run_config} (materialised in {seconds:.1f} s)")
    header = f"{'level':8s} {'nodes':>5s} {'largest':>7s} {'children':>8s} {'fine NMI/ARI':>13s}"
    if "scenario" in rows[0]:
        header += f" {'scenario NMI/ARI':>16s}"
    print(header + f" {'fn-word labels':>14s}")
    for r in rows:
        line = (
            f"{r['level']:8s} {r['nodes']:5d} {r['largest_share']:7.3f} {r['children']:>8s} "
            f"{r['fine'][0]:6.3f}/{r['fine'][1]:.3f}"
        )
        if "scenario" in r:
            line += f" {r['scenario'][0]:9.3f}/{r['scenario'][1]:.3f}"
        print(line + f" {r['function_word_labels']:14.3f}")


def summary(tables: dict) -> dict:
    """The JSON line's figures, from the default configuration."""
    hwu = tables[("hwu64", "default")]
    upper = [r for r in hwu[:-1] if 10 <= r["nodes"] <= 30]
    best = max(upper, key=lambda r: r["scenario"][0]) if upper else None
    bank = tables[("banking77", "default")]
    sample = tables[("banking77_sample", "default")]
    defaults = [rows for (_, config), rows in tables.items() if config == "default"]
    with_word = sum(r["function_word_count"] for rows in defaults for r in rows)
    total = sum(r["labels"] for rows in defaults for r in rows)
    return {
        "hwu64_fine_nmi": hwu[-1]["fine"][0],
        "hwu64_fine_ari": hwu[-1]["fine"][1],
        "hwu64_top_scenario_nmi": best["scenario"][0] if best else None,
        "hwu64_top_scenario_ari": best["scenario"][1] if best else None,
        "banking77_fine_nmi": bank[-1]["fine"][0],
        "banking77_fine_ari": bank[-1]["fine"][1],
        "sample_top_nodes": sample[0]["nodes"],
        "sample_top_largest_share": sample[0]["largest_share"],
        "stopword_label_share": round(with_word / total, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reproject", action="store_true", help="recompute the projections")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--smoke", action="store_true", help="a few hundred texts, for the tests")
    args = parser.parse_args()
    if args.smoke:
        with tempfile.TemporaryDirectory(prefix="hierarchy_smoke_") as tmp:
            work = Path(tmp)
            folder = smoke_datasets(work / "datasets", SMOKE_TEXTS)
            run(work / "hierarchy.duckdb", folder, work / "run_configs.yaml", DATASETS)
        return
    OUT.mkdir(parents=True, exist_ok=True)
    folder = link_datasets(OUT / "hierarchy_datasets", DATASETS)
    if args.reproject and DATABASE.exists():
        forget_projections(DATABASE)
    run(DATABASE, folder, OUT / "hierarchy_run_configs.yaml", args.datasets.split(","))


def run(database: Path, folder: Path, configs_path: Path, datasets: list[str]) -> None:
    """Materialise every dataset with every configuration into `database`; print the tables and,
    when all datasets ran, the JSON line."""
    configs = run_configs(configs_path)
    # the run_config partitions are read from this file when the code location is imported
    os.environ["CLUSTERING_RUN_CONFIGS"] = str(configs_path)
    tables, seconds = {}, {}
    for dataset in datasets:
        for config in configs:
            result = materialise(database, folder, dataset, config, configs_path)
            seconds[(dataset, config)] = result["seconds"]
            tables[(dataset, config)] = level_table(database, dataset, config)
    print(machine())
    for (dataset, config), rows in tables.items():
        print_table(dataset, config, rows, seconds[(dataset, config)])
    if set(DATASETS) <= set(datasets):
        print(json.dumps(summary(tables)))


if __name__ == "__main__":
    main()
