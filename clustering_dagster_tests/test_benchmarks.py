"""Benchmarks that cannot rot: every benchmark's `--smoke` mode, run as a user runs it
(`python -m benchmarks.NAME --smoke` from the repository root, in a fresh process). Each must exit
0 and end with its JSON line holding the benchmark's figures, and write nothing under data/ (smoke
runs write to temporary folders or the gitignored benchmarks/out/). Together they take a few
minutes: each smoke is a few hundred texts through the same code as the full benchmark."""

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from .support.llama_server import available as llama_cpp_available
from .support.paths import REPO


def _reliable(figures: dict) -> bool:
    return figures["failed"] == 0 and figures["lost_rows"] == figures["mismatched_rows"] == 0


# benchmark -> (the keys of its JSON line, what must hold of them)
SMOKES: dict[str, tuple[set[str], Callable[[dict], bool]]] = {
    "conversations": (
        {"conversations", "clusters_shown", "clusters_hidden", "pii_leaks", "small_cluster_leaks",
         "fine_nmi", "fine_ari", "fine_nmi_gap", "llm_server_errors", "pii_control_found",
         "seconds"},
        lambda f: f["conversations"] >= 300 and f["clusters_hidden"] >= 1
        and f["pii_leaks"] == f["small_cluster_leaks"] == 0
        and f["pii_control_found"] > 0 and 0 < f["fine_nmi"] <= 1
        and f["llm_server_errors"] in (0, None),
    ),
    "curation": (
        {"edits", "carried", "needs_attention", "lost", "edit_ms", "tree_ms", "kinds",
         "failures", "seconds"},
        lambda f: f["edits"] >= 16 and f["lost"] == 0 and f["failures"] == 0
        and f["carried"] + f["needs_attention"] == f["edits"]
        and all(k["made"] > 0 for k in f["kinds"].values()) and f["tree_ms"] > 0,
    ),
    "distributed": (  # with test_distributed.py: every step in a worker, a kill mid-step
        {"partitions_succeeded", "partitions_failed", "workers_used", "mismatched_rows",
         "lost_rows", "steps_outside_workers", "kills_mid_step", "kill_outcomes", "store",
         "seconds"},
        lambda f: f["partitions_succeeded"] >= 3 and f["partitions_failed"] == 0
        and f["workers_used"] >= 2 and f["mismatched_rows"] == f["lost_rows"] == 0
        and f["steps_outside_workers"] == 0 and f["kills_mid_step"] >= 1
        and set(f["kill_outcomes"]) <= {"retried, succeeded", "failed"}
        and f["store"].startswith("DuckLake"),
    ),
    "explorer": (
        {"tree_ms", "cluster_ms", "search_ms", "cold_search_ms", "emerging_found",
         "pages_checked", "texts", "seconds", "checks_failed"},
        lambda f: f["texts"] == 500 and f["pages_checked"] == 7 and f["checks_failed"] == []
        and f["emerging_found"] and all(f[k] > 0 for k in ("tree_ms", "cluster_ms", "search_ms")),
    ),
    "generalization": (
        {"min_nmi_margin", "min_ari_margin", "min_count_ratio", "max_count_ratio", "union_nmi",
         "union_ari", "sets", "seconds"},
        lambda f: f["sets"] == 3 and 0 < f["union_nmi"] <= 1,
    ),
    "hierarchy": (
        {"hwu64_fine_nmi", "hwu64_fine_ari", "hwu64_top_scenario_nmi", "hwu64_top_scenario_ari",
         "banking77_fine_nmi", "banking77_fine_ari", "sample_top_nodes",
         "sample_top_largest_share", "stopword_label_share"},
        lambda f: 0 < f["hwu64_fine_nmi"] <= 1 and 0 < f["banking77_fine_nmi"] <= 1,
    ),
    "large_n": (
        {"all", "large_n", "no_representatives", "hdbscan_on_placed", "sampled_hdbscan"},
        lambda f: all(0 < v <= 1 for v in f.values()),
    ),
    "llm": (
        {"first_run_calls", "rerun_calls", "seq_s", "conc16_s", "speedup"},
        lambda f: f["first_run_calls"] > 0 and f["rerun_calls"] == 0,
    ),
    "local_llm": (
        {"clusters", "named_by_model_share", "nodes", "nodes_named_share", "fallbacks",
         "server_errors", "seconds"},
        lambda f: f["clusters"] == 4 and f["nodes"] > f["clusters"] and f["server_errors"] == 0,
    ),
    "quality": (
        {"nmi", "ari", "clusters", "cold_s", "warm_s", "rerun_s"},
        lambda f: 0 < f["nmi"] <= 1 and f["clusters"] > 1,
    ),
    "reliability": (
        {"scenarios", "failed", "mismatched_rows", "lost_rows", "max_blocked_s"},
        lambda f: f["scenarios"] == 7 and _reliable(f),
    ),
    "scale": (
        {"n", "seconds", "peak_rss_gb", "growth_ratio", "nmi_drop", "encode_overhead"},
        lambda f: f["n"] == 1_000 and f["nmi_drop"] is not None and f["encode_overhead"] > 0,
    ),
    "search": (
        {"search_ms_banking77", "search_ms_100k", "first_query_ms_banking77",
         "first_query_ms_100k", "texts_banking77", "texts_100k"},
        lambda f: f["texts_banking77"] == 400 and f["texts_100k"] == 2_000,
    ),
}  # fmt: skip


def data_files() -> dict[str, str]:
    """Every file under data/ with the digest of its content."""
    return {
        str(path.relative_to(REPO)): hashlib.sha1(path.read_bytes()).hexdigest()
        for path in (REPO / "data").rglob("*")
        if path.is_file()
    }


def test_every_benchmark_has_a_smoke_test():
    scripts = {p.stem for p in (REPO / "benchmarks").glob("*.py")} - {"__init__", "common"}
    assert scripts == set(SMOKES)


@pytest.mark.parametrize("name", list(SMOKES))
def test_the_smoke_mode_runs_and_ends_with_its_json_line(name):
    if name == "local_llm" and not llama_cpp_available():
        pytest.skip("llama-cpp-python[server] is not installed (.ci/run installs it)")
    keys, holds = SMOKES[name]
    before = data_files()
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", "--smoke"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ | {"HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    last = done.stdout.strip().splitlines()[-1]
    figures = json.loads(last)
    assert isinstance(figures, dict), last
    assert keys <= figures.keys(), keys - figures.keys()
    assert holds(figures), figures
    assert data_files() == before, "a smoke run wrote under data/"
