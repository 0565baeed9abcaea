"""What the assets that call an LLM share: one summary run per alias, the facets' LLM, and their
cost as metadata."""

from dataclasses import dataclass
from functools import partial

import polars as pl
from dagster import AssetExecutionContext
from dagster_duckdb import DuckDBResource

from ..core.config.run_config import RunConfig, stable_hash
from ..core.data_in.datasets import DatasetSpec
from ..core.data_in.prepare import Describe
from ..core.llm.cache import CallCache
from ..core.llm.client import LLMClient
from ..core.llm.formats import OutputForm
from ..core.llm.requests import CallStats
from ..core.naming.conversation_facets import describe_conversations
from ..resources import connection
from .common import markdown_table

# What each Dagster run learned of its servers' output forms, by (run id, model, api_base): the
# second summary asset of a run in the same process starts from what the first found.
_forms: dict[tuple[str, str, str | None], OutputForm] = {}


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
    """One run per alias of the configuration, each LLM run with its own client and call cache;
    clients of the same model and server share, for the whole Dagster run, what they learn of its
    output forms."""
    runs = []
    for alias in config.labeler.aliases():
        settings = config.labeler.summaries.get(alias)
        if settings is None:
            keywords = {"n_keywords": config.labeler.n_keywords}
            runs.append(SummaryRun(alias, "keywords", stable_hash(keywords), None))
        else:
            cache = CallCache(duckdb.get_connection)  # the asset ensures the schema first
            key = (context.run.run_id, settings.model, settings.api_base)
            form = _forms.setdefault(key, OutputForm())
            client = LLMClient(settings, cache, log=context.log.warning, form=form)
            runs.append(
                SummaryRun(
                    alias,
                    f"llm:{settings.model}",
                    stable_hash(settings.model_dump(mode="json")),
                    client,
                )
            )
    return runs


def cost_metadata(runs: list[SummaryRun], steps: dict[str, dict[str, int]]) -> dict:
    """Totals of every LLM run (calls, cache hits, failures, tokens, cost, wall time), a table per
    alias, the output form each LLM run used and its fallbacks per step (`steps`: alias -> step
    -> count); the headline `fallbacks` is the sum of every step of every alias."""
    stats = {run.alias: run.client.stats if run.client else CallStats() for run in runs}
    total = CallStats()
    for one in stats.values():
        for name, value in vars(one).items():
            setattr(total, name, getattr(total, name) + value)
    table = pl.DataFrame(
        [
            {
                "alias": run.alias,
                "labeler": run.labeler,
                "form": run.client and run.client.form.used,
            }
            | stats[run.alias].as_dict()
            | {"fallbacks": sum(steps.get(run.alias, {}).values())}
            for run in runs
        ]
    )
    totals = total.as_dict()
    per_alias = {}
    for run in runs:
        if run.client is not None:
            per_alias[f"llm_form_{run.alias}"] = run.client.form.used
            per_alias[f"fallback_steps_{run.alias}"] = steps.get(run.alias, {})
    return per_alias | {
        "llm_calls": totals["calls"],
        "llm_cache_hits": totals["cache_hits"],
        "llm_retries": totals["retries"],
        "llm_form_refusals": totals["form_refusals"],
        "llm_invalid_replies": totals["invalid_replies"],
        "llm_repaired_replies": totals["repaired_replies"],
        "llm_failures": totals["failures"],
        "llm_prompt_tokens": totals["prompt_tokens"],
        "llm_completion_tokens": totals["completion_tokens"],
        "llm_cost_usd": totals["cost_usd"] if totals["priced_calls"] else None,
        "llm_wall_s": totals["wall_s"],
        "fallbacks": sum(sum(counts.values()) for counts in steps.values()),
        "summary_runs": markdown_table(table),
    }


def facet_describer(
    duckdb: DuckDBResource, context: AssetExecutionContext, config: RunConfig, spec: DatasetSpec
) -> tuple[SummaryRun | None, Describe | None]:
    """The LLM that writes a conversation dataset's facets, if the configuration names one."""
    settings = config.facets.llm
    if settings is None or spec.kind != "conversations":
        return None, None
    # raw_texts, the first asset of a run, may meet a fresh file: `connection` makes the schema
    client = LLMClient(settings, CallCache(partial(connection, duckdb)), log=context.log.warning)
    run = SummaryRun(
        "facets", f"llm:{settings.model}", stable_hash(settings.model_dump(mode="json")), client
    )

    def describe(messages, offline):
        return client.run(partial(describe_conversations, client, settings, messages, offline))

    return run, describe
