"""The LLM stages against a real OpenAI-compatible server that nobody here wrote: llama.cpp's
server (`llama-cpp-python[server]`) running SmolLM2-135M-Instruct on the CPU, started by the
tests on 127.0.0.1 with one thread. Skipped only when llama_cpp is not installed; `.ci/run`
installs it. The fault cases (429 storms, hangs, malformed JSON) stay with the suite's own test
server (test_llm_summaries.py)."""

import json
import os

import polars as pl
import pytest
import yaml

from clustering_dagster.assets import LLM_ASSETS, LLM_INPUTS
from clustering_dagster.core.config.run_config import LLMSettings
from clustering_dagster.core.llm.client import Ask, LLMClient
from clustering_dagster.core.llm.formats import grammar_schema
from clustering_dagster.core.naming.prompts import (
    Categories,
    Category,
    Choice,
    Node,
    ParentDescription,
    assignment_prompt,
    one_of,
)
from clustering_dagster.core.naming.summarize import ClusterDescription

from .support.llama_server import MODEL_ALIAS, LlamaServer, available
from .support.workspace import Workspace, banking_slice, call_cache, metadata

pytestmark = pytest.mark.skipif(
    not available(), reason="llama-cpp-python[server] is not installed (.ci/run installs it)"
)

RUN_CONFIG = "llm_example"  # a shipped partition key; the parameters are this module's
MODEL = f"openai/{MODEL_ALIAS}"
# Small prompts keep a run to a few minutes: SmolLM2 reads ~80 and writes ~37 tokens a second.
SETTINGS = {
    "model": MODEL,
    "max_concurrency": 2,
    "max_tokens": 300,
    "examples_per_cluster": 4,
    "random_examples": 1,
    "chars_per_example": 120,
    "contrast_clusters": 1,
    "contrast_examples": 1,
    "parent_levels": 1,
    "merge_ratio": 2,
    "neighbourhood_size": 2,  # two neighbourhoods: the deduplication step runs too
}


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    os.environ.setdefault("OPENAI_API_KEY", "dummy")  # a local server takes any key
    with LlamaServer(tmp_path_factory.mktemp("llama") / "server.log") as server:
        yield server


def test_a_refused_json_schema_falls_back_to_a_form_llama_cpp_takes(llama, tmp_path):
    settings = LLMSettings(model=MODEL, api_base=llama.api_base, max_tokens=200)
    client = LLMClient(settings, call_cache(tmp_path), log=lambda _: None)
    before = len(llama.statuses())
    prompt = (
        'Describe the cluster.\n\n<cluster size="3" shown="3">\n<text>my card has not arrived'
        "</text>\n<text>when will my new card arrive</text>\n<text>card still not delivered"
        '</text>\n</cluster>\n\nAnswer with a JSON object: {"title": "...", "summary": "...", '
        '"category": "...", "coherence": 1-10}'
    )
    answer = client.run(lambda: client.ask(Ask("cluster_description", prompt, ClusterDescription)))
    statuses = llama.statuses()[before:]
    # llama.cpp answers json_schema with a 500; that shape is not asked again
    assert statuses[0] == 500 and set(statuses[1:]) == {200}
    assert client.stats.form_refusals == 1 and client.stats.retries == 0
    assert client.form.used == "json_object"
    assert answer is not None and answer.title.strip() and answer.summary.strip()


def test_no_answer_schema_crashes_the_server_and_near_miss_names_are_repaired(llama, tmp_path):
    """llama.cpp compiles a json_object schema into a grammar; a large maxLength crashed it."""
    for schema in (ClusterDescription, Categories, Choice, ParentDescription):
        assert "maxLength" not in json.dumps(grammar_schema(schema))
    settings = LLMSettings(model=MODEL, api_base=llama.api_base, max_tokens=120)
    client = LLMClient(settings, call_cache(tmp_path), log=lambda _: None)
    parents = [
        Category(name="Payment / transaction / cancellation", description="Cancelled payments."),
        Category(name="CARD delivery & activation", description="Cards on their way."),
    ]
    child = Node("Card not arrived", "Customers wait for a new card.")
    question = Ask(
        "parent_assignment",
        assignment_prompt(settings, child, parents),
        Choice,
        (one_of(parents),),
    )
    choice = client.run(lambda: client.ask(question))
    assert llama.alive()
    # SmolLM2 copies the name as the prompt escaped it ("CARD delivery &amp; activation"): the
    # near miss is repaired to the offered name, not asked again
    assert choice.category == "CARD delivery & activation"
    assert client.stats.repaired_replies == 1 and client.stats.invalid_replies == 0


def test_a_summary_run_against_llama_cpp_names_clusters_and_every_node(llama, tmp_path):
    workspace = Workspace(tmp_path)
    workspace.add_dataset("bank", banking_slice(4))
    levels = [
        {"name": "coarse", "method": "kmeans", "k": 2},
        {"name": "fine", "method": "kmeans", "k": 4},
    ]
    summaries = {"local": SETTINGS | {"api_base": llama.api_base}}
    config = {RUN_CONFIG: {"levels": levels, "labeler": {"kind": "llm", "summaries": summaries}}}
    workspace.write_configs(yaml.safe_dump(config))
    assert workspace.materialize("bank", RUN_CONFIG, assets=LLM_INPUTS).success
    before = len(llama.statuses())
    result = workspace.materialize("bank", RUN_CONFIG, assets=LLM_ASSETS)

    statuses = llama.statuses()[before:]
    assert llama.alive() and statuses.count(500) == 1 and set(statuses) == {200, 500}
    described, merged = metadata(result, "cluster_summaries"), metadata(result, "merged_hierarchy")
    assert described["llm_form_local"] == merged["llm_form_local"] == "json_object"
    assert described["llm_form_refusals"] == 1 and merged["llm_form_refusals"] == 0
    assert described["llm_retries"] == merged["llm_retries"] == 0
    rows = workspace.sql("SELECT * FROM clustering.cluster_summaries")
    named = rows.filter(~pl.col("fallback"))
    assert named.height >= 3  # of 4 clusters
    assert (named["title"].str.strip_chars() != "").all()
    assert (named["summary"].str.strip_chars() != "").all()
    tree = workspace.sql("SELECT * FROM clustering.merged_hierarchy")
    assert tree.filter(pl.col("level_name") == "parent_1").height >= 2
    assert (tree["title"].str.strip_chars() != "").all()
    for figures in (described, merged):  # the headline is the sum of the steps
        assert figures["fallbacks"] == sum(figures["fallback_steps_local"].values())
