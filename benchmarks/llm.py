"""Cost and speed of the LLM summaries and merged hierarchy, against the local test server.

Clusters Banking77 (all 13,083 queries, or the shipped 1,540-query sample with --sample) with the
`default` levels once, then materialises `cluster_summaries` and `merged_hierarchy` through
litellm over real HTTP to the OpenAI-compatible test server (its own process, on 127.0.0.1),
which answers every chat call after a fixed latency (200 ms):
  first    empty LLM cache, concurrency 16: how many calls a run makes
  rerun    nothing changed: how many calls a re-run makes (must be 0)
  seq      empty cache, concurrency 1: wall time
  conc16   empty cache, concurrency 16: wall time
Calls are the HTTP requests the assets report sending (metadata `llm_calls`). Wall times are of
the two assets' materialisation (Dagster and all). Prints the top of the merged tree; the last
line is one JSON object.

Usage, from the repository root: python -m benchmarks.llm [--sample] [--latency 0.2] [--smoke]
(--smoke: the sample's first 15 categories, 300 queries, latency 10 ms: under a minute)
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

import polars as pl
import yaml

REPO = Path(__file__).resolve().parents[1]

BANKING77 = REPO / "data" / "banking77"
SAMPLE = REPO / "data" / "datasets" / "banking77_sample.csv"
SMOKE_CATEGORIES = 15  # of the shipped sample, 20 queries each
RUN_CONFIG = "llm_example"  # a shipped partition key; the parameters are this benchmark's


def run_config(api_base: str, concurrency: int) -> str:
    shipped = yaml.safe_load((REPO / "data" / "run_configs.yaml").read_text())
    settings = {
        "model": "hosted_vllm/test-server-model",  # an OpenAI-compatible server, as vLLM is
        "api_base": api_base,
        "max_concurrency": concurrency,
        "timeout_s": 30,
    }
    return yaml.safe_dump(
        {
            RUN_CONFIG: {
                "levels": shipped["default"]["levels"],
                "labeler": {"kind": "llm", "summaries": {"bench": settings}},
            }
        }
    )


def llm_wall(metadata: dict) -> float:
    """Seconds the assets spent in their LLM stages (metadata `llm_wall_s`)."""
    return sum(m["llm_wall_s"] for m in metadata.values())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sample", action="store_true", help="the 1,540-query sample only")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per chat call")
    parser.add_argument("--smoke", action="store_true", help="300 queries, latency 10 ms")
    args = parser.parse_args()
    if args.smoke:
        args.latency = 0.01

    from dagster import DagsterInstance, materialize
    from dagster_duckdb import DuckDBResource

    from clustering_dagster.assets import LLM_ASSETS, LLM_INPUTS
    from clustering_dagster.core.labelling.hierarchy import render_tree
    from clustering_dagster.core.storage.store import connect
    from clustering_dagster.partitions import partition_key
    from clustering_dagster.resources import ClusteringSettings

    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clustering_dagster_tests.support.openai_server",
            "--latency",
            str(args.latency),
        ],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    api_base = server.stdout.readline().strip()
    with tempfile.TemporaryDirectory() as tmp, DagsterInstance.ephemeral() as instance:
        workdir = Path(tmp)
        (workdir / "datasets").mkdir()
        source = SAMPLE if args.sample else BANKING77
        if args.smoke:
            sample = pl.read_csv(SAMPLE)
            keep = sorted(sample["category"].unique())[:SMOKE_CATEGORIES]
            source = workdir / "banking77_smoke.csv"
            sample.filter(pl.col("category").is_in(keep)).write_csv(source)
        (workdir / "datasets" / f"banking77{source.suffix}").symlink_to(source)
        configs = workdir / "run_configs.yaml"
        database = workdir / "bench.duckdb"
        instance.add_dynamic_partitions("dataset", ["banking77"])

        def run(assets, concurrency: int = 16) -> tuple[float, dict]:
            configs.write_text(run_config(api_base, concurrency))
            started = time.perf_counter()
            result = materialize(
                assets,
                instance=instance,
                partition_key=partition_key("banking77", RUN_CONFIG),
                resources={
                    "duckdb": DuckDBResource(database=str(database)),
                    "clustering": ClusteringSettings(
                        datasets_dir=str(workdir / "datasets"), run_configs_path=str(configs)
                    ),
                },
            )
            seconds = time.perf_counter() - started
            metadata = {
                event.materialization.asset_key.to_user_string(): {
                    k: v.value for k, v in event.materialization.metadata.items()
                }
                for event in result.get_asset_materialization_events()
            }
            return seconds, metadata

        def calls_during(assets, concurrency: int = 16) -> tuple[int, float, dict]:
            seconds, metadata = run(assets, concurrency)
            return sum(m["llm_calls"] for m in metadata.values()), seconds, metadata

        def clear_llm_cache() -> None:
            with connect(database) as conn:
                conn.execute("DELETE FROM clustering.llm_calls")

        run(LLM_INPUTS)
        first_calls, _, first = calls_during(LLM_ASSETS)
        rerun_calls, _, rerun = calls_during(LLM_ASSETS)
        clear_llm_cache()
        seq_calls, seq_s, seq = calls_during(LLM_ASSETS, concurrency=1)
        clear_llm_cache()
        conc_calls, conc16_s, conc = calls_during(LLM_ASSETS, concurrency=16)
        assert seq_calls == conc_calls == first_calls, (seq_calls, conc_calls, first_calls)
        with connect(database) as conn:
            texts = conn.execute("SELECT count(*) FROM clustering.texts").fetchone()[0]
            tree = conn.execute(
                "SELECT * FROM clustering.merged_hierarchy WHERE alias = 'bench' ORDER BY position"
            ).pl()
    server.stdin.close()  # the server stops when its input closes
    server.wait(timeout=30)

    described = first["cluster_summaries"]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(
        f"texts: {texts:,} Banking77 queries; base clusters: {described['clusters']}; "
        f"tree levels: {first['merged_hierarchy']['levels_bench']}; latency {args.latency:.3f} s/call"
    )
    print(
        f"first run: {first_calls} calls ({described['llm_calls']} cluster descriptions, "
        f"{first['merged_hierarchy']['llm_calls']} for the merged hierarchy)"
    )
    hits = (
        rerun["cluster_summaries"]["llm_cache_hits"] + rerun["merged_hierarchy"]["llm_cache_hits"]
    )
    print(f"re-run, nothing changed: {rerun_calls} calls, {hits} cache hits")
    print(
        f"wall time, empty cache: concurrency 1 {seq_s:.1f} s, concurrency 16 {conc16_s:.1f} s, "
        f"speedup {seq_s / conc16_s:.1f}x (LLM stages alone: {llm_wall(seq):.1f} s and "
        f"{llm_wall(conc):.1f} s)"
    )
    print("top of the merged tree (named by the test server from frequent words, not an LLM):")
    shallow = tree.filter(pl.col("level") < pl.col("level").max()).rename({"title": "label"})
    print(render_tree(shallow, max_children=3))
    print("its first branch down to the base clusters, with summaries:")
    root = tree["path"][0]
    branch = tree.filter((pl.col("path") == root) | pl.col("path").str.starts_with(root + " > "))
    print(render_tree(branch.with_columns(label=pl.col("title") + ": " + pl.col("summary")), 2))
    print(
        json.dumps(
            {
                "first_run_calls": first_calls,
                "rerun_calls": rerun_calls,
                "seq_s": round(seq_s, 1),
                "conc16_s": round(conc16_s, 1),
                "speedup": round(seq_s / conc16_s, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
