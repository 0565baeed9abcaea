"""What the two summary assets share: one summary run per alias, and its cost as metadata."""

from dataclasses import dataclass

import polars as pl
from dagster import AssetExecutionContext
from dagster_duckdb import DuckDBResource

from ..core.llm import CallCache, CallStats, LLMClient
from ..core.run_config import RunConfig, stable_hash
from .common import markdown_table


@dataclass(frozen=True)
class SummaryRun:
    """One alias of a run configuration: its LLM client, or None for the offline labeler."""

    alias: str
    labeler: str
    settings_hash: str
    client: LLMClient | None


def summary_runs(
    duckdb: DuckDBResource, context: AssetExecutionContext, config: RunConfig
) -> list[SummaryRun]:
    """One run per alias of the configuration, each LLM run with its own client and call cache."""
    runs = []
    for alias in config.labeler.aliases():
        settings = config.labeler.summaries.get(alias)
        if settings is None:
            keywords = {"n_keywords": config.labeler.n_keywords}
            runs.append(SummaryRun(alias, "keywords", stable_hash(keywords), None))
        else:
            cache = CallCache(duckdb.get_connection)  # the asset ensures the schema first
            client = LLMClient(settings, cache, log=context.log.warning)
            runs.append(
                SummaryRun(
                    alias,
                    f"llm:{settings.model}",
                    stable_hash(settings.model_dump(mode="json")),
                    client,
                )
            )
    return runs


def cost_metadata(runs: list[SummaryRun], fallbacks: dict[str, int]) -> dict:
    """Totals of every LLM run (calls, cache hits, failures, tokens, cost, wall time) and a table
    per alias; `fallbacks` counts the nodes per alias that kept an offline label."""
    stats = {run.alias: run.client.stats if run.client else CallStats() for run in runs}
    total = CallStats()
    for one in stats.values():
        for name, value in vars(one).items():
            setattr(total, name, getattr(total, name) + value)
    table = pl.DataFrame(
        [
            {"alias": run.alias, "labeler": run.labeler}
            | stats[run.alias].as_dict()
            | {"fallbacks": fallbacks.get(run.alias, 0)}
            for run in runs
        ]
    )
    totals = total.as_dict()
    return {
        "llm_calls": totals["calls"],
        "llm_cache_hits": totals["cache_hits"],
        "llm_retries": totals["retries"],
        "llm_invalid_replies": totals["invalid_replies"],
        "llm_failures": totals["failures"],
        "llm_prompt_tokens": totals["prompt_tokens"],
        "llm_completion_tokens": totals["completion_tokens"],
        "llm_cost_usd": totals["cost_usd"] if totals["priced_calls"] else None,
        "llm_wall_s": totals["wall_s"],
        "fallbacks": sum(fallbacks.values()),
        "summary_runs": markdown_table(table),
    }
