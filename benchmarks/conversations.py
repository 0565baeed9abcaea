"""Conversations and privacy: the real pipeline on support conversations with fake personal data
planted in them, under a privacy run configuration, and a search of every output for what must
not be there.

`build_conversations(5000, seed=0)` (the tests' generator: Banking77 and HWU64 queries wrapped
in multi-turn chats, about 15% with planted e-mails, phones, cards, IBANs, IPs and secret URLs)
is written as messages JSONL with its YAML, and the same queries as a plain text dataset (the
exact dataset texts, with their intents). Both are materialised (every asset, in this process)
with the shipped `private` run configuration, its `min_conversations` set as below, in
`benchmarks/out/conversations/`. Then:

- privacy threshold: the clusters shown and hidden per level (`clustering.hidden_clusters`),
  `exposures()` of the views, and own checks of every output: each node shown other than the
  folded one (cluster id -2) holds at least `min_conversations` texts, and no text of the folded
  node appears (`small_cluster_leaks`, the sum);
- personal data: every planted string (`Built.planted`) is searched in every output: a dump of
  every table and view of schema `clustering` (`clustering_store` is the owner's store, not an
  output; float columns are left out), the Dagster metadata of every asset, the map page the
  `cluster_map` asset writes, and the `--json` output of `clustering-dagster` run as
  subprocesses against the DuckDB file: `datasets`, `runs`, `tree`, `show` of every node
  (`--smoke`: the top nodes, a sample of fine ones and the folded node), `texts --limit 0` of
  every finest node (`--smoke`: the same sample) and the folded one, `search` (SEARCHES, texts
  and clusters, limit 50), `export` as CSV and JSON and the map (`map --out`). Matching is
  case-insensitive, also with whitespace and dashes removed from both sides, and also of the
  digits-only form of phones, cards and IBANs (an all-digit form inside the fraction of a
  decimal number is not counted); HTML and JSON escapes are decoded. `pii_leaks`: planted
  strings found anywhere. The same search over the owner's originals must find them all;
- quality: NMI / ARI of the finest level against the intents, over every conversation (the
  folded node counts as one cluster; over the shown ones only, printed beside), and
  `fine_nmi_gap`: the plain queries' fine NMI under the same run configuration minus it;
- an LLM: the facets of a slice of LLM_CONVERSATIONS conversations (half with planted data)
  asked of SmolLM2-135M on llama.cpp's server (`clustering_dagster_tests/support/llama_server`)
  through `prepare`, as `raw_texts` asks them: `llm_server_errors` counts 5xx replies the client
  did not handle (not a refused structured-output form, not followed by a retry), requests that
  raised, and a dead server; the valid and fallback facets are printed too (null when
  llama-cpp-python is not installed).

Why min_conversations 30 (10 with --smoke): the threshold is fixed before the run from the
dataset's size, never from the clusters found. The finest level's clusters hold at least 0.55%
of the texts (about 27 of 5,000; 5 of 300), so a threshold at or below that could only bite through
`min_users`; the smallest round number above it (30, 0.6% of the conversations; 10 for 300, the
shipped default) makes the threshold a real bound on the smallest topics the clustering can
report, a few conversations each, which is where a person is easiest to single out. It stays
well under the typical intent's size (about 35 conversations each), so it hides fragments, not
the data. min_users 3 as shipped.

Two people are added who each write 1% of the conversations (at least 12) about their own topic,
gardening or chess, which neither source holds (`add_one_person_topics`): the clusters of one
person's messages that `min_users` exists to hide, and that must be hidden (`clusters_hidden`)
whatever `min_conversations` is.

The last line is one JSON object: conversations, clusters_shown (finest level, without the
folded node), clusters_hidden (finest level's folded clusters; clusters_hidden_all_levels sums
`hidden_clusters.clusters` over levels), hidden_texts, pii_leaks, pii_control_found,
small_cluster_leaks, fine_nmi, fine_ari, plain_fine_nmi, fine_nmi_gap, request_has_query (the
share of clustered texts that hold their conversation's query), llm_server_errors, llm_valid,
llm_fallbacks, seconds and stage_seconds. Bars (issue): pii_leaks == 0, small_cluster_leaks == 0, clusters_hidden >= 1,
fine_nmi_gap <= 0.03, llm_server_errors == 0; printed met / unmet.

Usage, from the repository root:
    python -m benchmarks.conversations [--smoke] [--seed 0] [--min-conversations 30]
(--smoke: 300 conversations, min_conversations 10, 2 LLM conversations, a couple of minutes;
in `benchmarks/out/conversations_smoke/`)
"""

import argparse
import copy
import dataclasses
import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import yaml

from benchmarks.common import OUT, REPO, forget_projections, machine, materialise
from clustering_dagster_tests.support import llama_server
from clustering_dagster_tests.support.conversations import (
    Built,
    build_conversations,
    write_messages_jsonl,
)

RUN_CONFIG = "private"  # the shipped name, with the threshold below (partitions are by name)
DATASET = "support_chats"
PLAIN = "support_queries"
MIN_USERS = 3
SEARCHES = (
    "card declined",
    "email",
    "reset password",
    "my phone number",
    "IBAN for a transfer",
    "card number",
    "login link with a token",
    "IP address",
)
BARS = {  # figure -> (what must hold, as printed)
    "pii_leaks": (lambda v: v == 0, "== 0"),
    "small_cluster_leaks": (lambda v: v == 0, "== 0"),
    "clusters_hidden": (lambda v: v >= 1, ">= 1"),
    "fine_nmi_gap": (lambda v: v <= 0.03, "<= 0.03"),
    "llm_server_errors": (lambda v: v == 0, "== 0"),
}


@dataclass(frozen=True)
class Scale:
    conversations: int
    min_conversations: int
    llm_conversations: int
    folder: Path
    show_every_node: bool


FULL = Scale(5000, 30, 8, OUT / "conversations", True)
SMOKE = Scale(300, 10, 2, OUT / "conversations_smoke", False)


class Stages:
    """Wall time per stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str):
        stages = self

        class _Timer:
            def __enter__(self):
                self.started = time.perf_counter()

            def __exit__(self, *exc):
                stages.seconds[name] = round(time.perf_counter() - self.started, 1)

        return _Timer()


# --- the data and the run configuration ------------------------------------------------------

# What the threshold is for: one person writing many conversations about their own matter makes a
# cluster of one person's messages. Two such people are added to the generated conversations,
# each asking about a topic neither source dataset holds (their words vary; the topic does not).
ONE_PERSON_TOPICS = {
    "gardening": (
        "my {plant} seedlings in the greenhouse are {state}, which {fix} should I use?",
        ["tomato", "pepper", "cucumber", "basil", "chilli", "aubergine", "courgette"],
        ["wilting", "turning yellow", "leggy", "covered in white spots", "not flowering"],
        ["fertiliser", "watering schedule", "compost mix", "grow light", "pot size"],
    ),
    "chess": (
        "in the {plant} opening, after {state}, is {fix} a good reply for black?",
        ["Sicilian", "French", "Caro-Kann", "Ruy Lopez", "Italian", "King's Indian", "Dutch"],
        ["the early queen trade", "white castles long", "the pawn storm", "a knight sacrifice"],
        ["a quiet bishop move", "an exchange sacrifice", "castling short", "pushing the d-pawn"],
    ),
}


def add_one_person_topics(built: Built, seed: int) -> Built:
    """`built` with, per ONE_PERSON_TOPICS entry, 1% of its size (at least 12) conversations by
    one new user, labelled `solo:<topic>`: clusters the threshold's min_users must hide."""
    rng = np.random.default_rng(seed)
    per_person = max(12, round(0.01 * len(built.rows)))
    rows = list(built.rows)
    for number, (topic, (template, plants, states, fixes)) in enumerate(ONE_PERSON_TOPICS.items()):
        for i in range(per_person):
            query = template.format(
                plant=rng.choice(plants), state=rng.choice(states), fix=rng.choice(fixes)
            )
            rows.append(
                {
                    "conversation_id": f"solo{number}_{i:04d}",
                    "user_id": f"solo_user_{number}",
                    "intent": f"solo:{topic}",
                    "scenario": None,
                    "messages": [
                        {"role": "user", "content": query},
                        {"role": "assistant", "content": "Here is what I would suggest."},
                    ],
                    "query": query,
                    "planted": [],
                }
            )
    return dataclasses.replace(built, rows=rows)


def write_datasets(built: Built, folder: Path) -> None:
    """The conversations as messages JSONL (with its YAML) and their queries as a text dataset."""
    if folder.exists():
        shutil.rmtree(folder)
    write_messages_jsonl(built.rows, folder / f"{DATASET}.jsonl")
    pl.DataFrame(
        {"text": [r["query"] for r in built.rows], "label": [r["intent"] for r in built.rows]}
    ).write_csv(folder / f"{PLAIN}.csv")
    (folder / f"{PLAIN}.yaml").write_text("label_column: label\n")


def write_run_configs(path: Path, min_conversations: int) -> None:
    """The shipped `private` configuration with this benchmark's threshold, alone in `path`."""
    shipped = yaml.safe_load((REPO / "data" / "run_configs.yaml").read_text())
    private = copy.deepcopy(shipped[RUN_CONFIG])
    private["facets"] = {"embed": "request", "llm": None}
    private["privacy"] = {
        "min_conversations": min_conversations,
        "min_users": MIN_USERS,
        "scrub": True,
    }
    path.write_text(yaml.safe_dump({RUN_CONFIG: private}, sort_keys=False))


# --- what the partition holds ----------------------------------------------------------------


def partition_rows(database: Path, dataset: str):
    """Every text (the owner's view: hidden ones included) with its finest cluster, the levels'
    assignments, and the hidden clusters per level."""
    import duckdb

    from clustering_dagster.core.storage.store import Partition, read_partition

    part = Partition(dataset, RUN_CONFIG)
    with duckdb.connect(str(database), read_only=True) as conn:
        texts = read_partition(
            conn, "texts", part, "row_idx, text_id, text, ground_truth", "row_idx"
        )
        assignments = read_partition(
            conn, "assignments", part, "level, level_name, row_idx, cluster_id", "level, row_idx"
        )
        hidden = conn.execute(
            "SELECT level, level_name, clusters, texts FROM clustering.hidden_clusters "
            "WHERE dataset = ? AND run_config = ? ORDER BY level",
            [dataset, RUN_CONFIG],
        ).pl()
    return texts, assignments, hidden


def fine_scores(texts: pl.DataFrame, assignments: pl.DataFrame) -> dict:
    from clustering_dagster.core.clustering.evaluate import agreement
    from clustering_dagster.core.storage.store import HIDDEN_ID

    fine = assignments.filter(pl.col("level") == assignments["level"].max())
    scored = fine.join(texts.select("row_idx", "ground_truth"), on="row_idx")
    every = agreement(scored["ground_truth"].to_numpy(), scored["cluster_id"].to_numpy())
    shown = scored.filter(pl.col("cluster_id") != HIDDEN_ID)
    visible = agreement(shown["ground_truth"].to_numpy(), shown["cluster_id"].to_numpy())
    return {
        "nmi": round(every["nmi"], 3),
        "ari": round(every["ari"], 3),
        "shown_nmi": round(visible["nmi"], 3),
        "shown_ari": round(visible["ari"], 3),
        "texts": scored.height,
        "shown_texts": shown.height,
        "clusters": int(shown["cluster_id"].n_unique()),
        "true_k": int(scored["ground_truth"].n_unique()),
    }


def view_dumps(database: Path, folder: Path) -> dict[str, str]:
    """Every table and view of schema `clustering`, whole, as JSON lines (float columns left
    out: coordinates and vectors hold no text, and their digits would be noise)."""
    import duckdb

    folder.mkdir(parents=True, exist_ok=True)
    dumps = {}
    with duckdb.connect(str(database), read_only=True) as conn:
        names = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'clustering' "
            "AND table_catalog = current_database() ORDER BY table_name"
        ).fetchall()
        for (name,) in names:
            frame = conn.execute(f"SELECT * FROM clustering.{name}").pl()
            floats = [
                column
                for column, dtype in frame.schema.items()
                if dtype.is_float() or (dtype.is_nested() and "Float" in str(dtype))
            ]
            frame = frame.drop(floats)
            text = "\n".join(
                json.dumps(row, ensure_ascii=False, default=str) for row in frame.rows(named=True)
            )
            (folder / f"{name}.jsonl").write_text(text)
            dumps[f"view clustering.{name}"] = text
    return dumps


def owner_originals(database: Path) -> str:
    """The owner's rows as read, before scrubbing (`clustering_store.private_rows`): not an
    output, but where every planted string must be found, so the search is shown to work."""
    import duckdb

    from clustering_dagster.core.storage.store import STORE

    with duckdb.connect(str(database), read_only=True) as conn:
        rows = conn.execute(
            f"SELECT original FROM {STORE}.private_rows WHERE dataset = ? AND run_config = ?",
            [DATASET, RUN_CONFIG],
        ).fetchall()
    return "\n".join(str(original) for (original,) in rows)


def request_fidelity(texts: pl.DataFrame, built: Built) -> dict:
    """How often the clustered facet holds the conversation's query (whitespace collapsed), and
    the commonest texts clustered in place of it."""
    queries = pl.DataFrame(
        {
            "text_id": [r["conversation_id"] for r in built.rows],
            "query": [" ".join(r["query"].split()) for r in built.rows],
        }
    )
    joined = texts.join(queries, on="text_id").with_columns(
        holds=pl.col("text").str.contains(pl.col("query"), literal=True)
    )
    instead = (
        joined.filter(~pl.col("holds")).group_by("text").len().sort("len", descending=True).head(3)
    )
    return {
        "share": round(float(joined["holds"].mean()), 3),
        "instead": [f"{text!r} x{n}" for text, n in instead.iter_rows()],
    }


# --- the command line ------------------------------------------------------------------------


class Cli:
    """`clustering-dagster --db DATABASE ...` in a subprocess; every output kept in `folder`."""

    def __init__(self, database: Path, configs: Path, folder: Path) -> None:
        self.database = database
        self.folder = folder
        self.env = os.environ | {"CLUSTERING_RUN_CONFIGS": str(configs)}
        self.outputs: dict[str, str] = {}
        self.failures: list[str] = []
        self.calls = 0

    def __call__(self, name: str, *args: str, stdin: str | None = None, ok=(0,)) -> str:
        command = [sys.executable, "-m", "clustering_dagster.cli", "--db", str(self.database)]
        done = subprocess.run(
            [*command, *args],
            cwd=REPO,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=600,
        )
        self.calls += 1
        if done.returncode not in ok:
            self.failures.append(f"{' '.join(args)}: exit {done.returncode}: {done.stderr[-300:]}")
        path = self.folder / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ".out")
        path.write_text(done.stdout + ("\n--- stderr\n" + done.stderr if done.stderr else ""))
        self.outputs[f"cli {name}"] = done.stdout + "\n" + done.stderr
        return done.stdout

    def file(self, name: str, path: Path) -> str:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        self.outputs[f"cli {name}"] = text
        return text


def json_or_none(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def strings(value) -> list[str]:
    """Every string inside a JSON value (keys and values)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def map_data(page: str) -> dict | None:
    """The points and names a map page inlines."""
    found = re.search(r'<script id="map-data" type="application/json">(.*?)</script>', page, re.S)
    return json.loads(found.group(1)) if found else None


def run_cli(cli: Cli, scale: Scale, rng: np.random.Generator) -> dict:
    """Every command against the partition; returns the parsed outputs the checks read."""
    part = ["-r", RUN_CONFIG]
    cli("datasets", "datasets", "--json")
    cli("runs", "runs", "--json")
    tree = json.loads(cli("tree", "tree", DATASET, *part, "--json"))
    finest = max(node["level"] for node in tree)
    fine = [n["node_id"] for n in tree if n["level"] == finest]
    if scale.show_every_node:
        shown = [n["node_id"] for n in tree]
    else:
        tops = [n["node_id"] for n in tree if n["level"] == 0]
        fine_visible = [n for n in fine if not n.endswith("/-2")]
        sample = rng.choice(fine_visible, size=min(5, len(fine_visible)), replace=False).tolist()
        folded = [n for n in fine if n.endswith("/-2")]
        shown = list(dict.fromkeys(tops + sample + folded))
    shows = {
        node: json_or_none(cli(f"show {node}", "show", DATASET, node, *part, "-n", "20", "--json"))
        for node in shown
    }
    # the folded node may be refused (exit 1) rather than listed empty: either is fine
    listed = fine if scale.show_every_node else [n for n in shown if n in fine]
    texts = {
        node: json_or_none(
            cli(
                f"texts {node}",
                "texts", DATASET, node, *part, "--limit", "0", "--json",
                ok=(0, 1) if node.endswith("/-2") else (0,),
            )
        )
        for node in listed
    }  # fmt: skip
    queries = "\n".join(SEARCHES) + "\n"
    searches = []
    for kind in ("--texts", "--clusters"):
        out = cli(
            f"search {kind}",
            "search", "-", "-d", DATASET, *part, kind, "--limit", "50", "--json",
            stdin=queries,
        )  # fmt: skip
        searches += [json.loads(line) for line in out.splitlines() if line.strip()]
    csv_path, json_path = cli.folder / "export.csv", cli.folder / "export.json"
    html_path = cli.folder / "map.html"
    for path in (csv_path, json_path, html_path):
        path.unlink(missing_ok=True)
    cli("export csv", "export", DATASET, *part, "--format", "csv", "-o", str(csv_path))
    cli("export json", "export", DATASET, *part, "--format", "json", "-o", str(json_path))
    cli("map", "map", DATASET, *part, "--out", str(html_path), "--json")
    cli.file("export.csv", csv_path)
    exported = json_or_none(cli.file("export.json", json_path)) or []
    asset_page = cli.database.parent / "maps" / f"{DATASET}__{RUN_CONFIG}.html"
    cli.outputs["asset map page (cluster_map)"] = (
        asset_page.read_text(encoding="utf-8") if asset_page.exists() else ""
    )
    csv = pl.read_csv(csv_path, infer_schema=False) if csv_path.exists() else None
    return {
        "tree": tree,
        "shows": shows,
        "texts": texts,
        "searches": searches,
        "export_csv": csv,
        "export_json": exported,
        "map": map_data(cli.file("map.html", html_path)),
        "asset map": map_data(cli.outputs["asset map page (cluster_map)"]),
    }


# --- the checks ------------------------------------------------------------------------------

_SQUEEZE = re.compile(r"[\s\-\u2010-\u2015\u2212]+")
_JSON_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")


def squeeze(text: str) -> str:
    return _SQUEEZE.sub("", text.lower())


def haystack(raw: str) -> str:
    """The output as written, with its HTML entities and JSON escapes decoded beside it."""
    decoded = _JSON_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), raw).replace("\\/", "/")
    variants = (raw, html.unescape(raw), decoded, html.unescape(decoded))
    return "\n".join(dict.fromkeys(variants)).lower()


def digits_only(value: str, kind: str) -> str | None:
    """The digits of a planted phone, card or IBAN (at least 8), else None."""
    digits = re.sub(r"\D", "", value)
    return digits if kind in ("phone", "card", "iban") and len(digits) >= 8 else None


def find(text: str, needle: str) -> int:
    """Where `needle` is in `text` (-1: nowhere); an all-digit needle inside the fraction of a
    decimal number does not count."""
    position = text.find(needle)
    while position >= 0 and needle.isdigit() and in_fraction(text, position):
        position = text.find(needle, position + 1)
    return position


def in_fraction(text: str, start: int) -> bool:
    """Whether position `start` of `text` lies in the fractional digits of a decimal number."""
    i = start
    while i > 0 and text[i - 1].isdigit():
        i -= 1
    return i >= 2 and text[i - 1] == "." and text[i - 2].isdigit()


def pii_hits(outputs: dict[str, str], built: Built) -> list[dict]:
    """Every (planted string, output) found, with the form it was found in. Squeezed (no
    whitespace or dashes) on both sides first: a string found as written is found so too."""
    hits = []
    for name, raw in outputs.items():
        plain = haystack(raw)
        squeezed = squeeze(plain)
        for value in built.planted:
            kind = built.kinds[value]
            needle, form = squeeze(value), "no spaces or dashes"
            position = find(squeezed, needle)
            if position >= 0 and value.lower() in plain:
                form = "as written"
            digits = digits_only(value, kind)
            if position < 0 and digits is not None:
                needle, form = digits, "digits only"
                position = find(squeezed, needle)
            if position >= 0:
                context = squeezed[max(0, position - 60) : position + len(needle) + 60]
                hits.append(
                    {"planted": value, "kind": kind, "output": name, "form": form,
                     "context": context}
                )  # fmt: skip
    return hits


def privacy_checks(cli_out: dict, texts: pl.DataFrame, assignments: pl.DataFrame, least: int):
    """Clusters below the threshold and texts of the folded node seen in the CLI's outputs:
    a list of (where, what) findings."""
    from clustering_dagster.core.storage.store import HIDDEN_ID

    folded_suffix = f"/{HIDDEN_ID}"
    fine = assignments.filter(pl.col("level") == assignments["level"].max())
    labelled = fine.join(texts.select("row_idx", "text"), on="row_idx")
    shown_texts = set(labelled.filter(pl.col("cluster_id") != HIDDEN_ID)["text"])
    hidden_only = set(labelled.filter(pl.col("cluster_id") == HIDDEN_ID)["text"]) - shown_texts
    hidden_lower = {t.lower() for t in hidden_only} - {t.lower() for t in shown_texts}
    findings: list[tuple[str, str]] = []

    def small(where: str, node_id: str, size) -> None:
        if not str(node_id).endswith(folded_suffix) and size is not None and size < least:
            findings.append((where, f"node {node_id} of {size} texts"))

    def hidden_strings(where: str, value) -> None:
        for s in strings(value):
            if s in hidden_only:
                findings.append((where, f"folded text {s[:80]!r}"))

    sizes = {}
    for node in cli_out["tree"]:
        sizes[node["node_id"]] = node["size"]
        small("tree", node["node_id"], node["size"])
    for node_id, shown in cli_out["shows"].items():
        if shown is None:
            continue
        small(f"show {node_id}", shown["node_id"], shown["size"])
        for child in shown.get("children", []):
            small(f"show {node_id}", child["node_id"], child["size"])
        if node_id.endswith(folded_suffix) and shown.get("typical_texts"):
            findings.append((f"show {node_id}", f"{len(shown['typical_texts'])} typical texts"))
        hidden_strings(f"show {node_id}", shown)
    for node_id, rows in cli_out["texts"].items():
        if rows is None:
            continue
        if node_id.endswith(folded_suffix) and rows:
            findings.append((f"texts {node_id}", f"{len(rows)} texts of the folded node"))
        elif len(rows) < least and not node_id.endswith(folded_suffix):
            findings.append((f"texts {node_id}", f"{len(rows)} texts listed"))
        hidden_strings(f"texts {node_id}", rows)
    for result in cli_out["searches"]:
        where = f"search {result['query']!r}"
        for hit in result.get("clusters", []):
            small(where, hit["node_id"], hit.get("size"))
        for hit in result.get("texts", []):
            for step in hit["clusters"]:
                small(where, step["node_id"], sizes.get(step["node_id"], 0))
        hidden_strings(where, result)
    csv = cli_out["export_csv"]
    if csv is not None:
        levels = {node["level_name"] for node in cli_out["tree"]}
        for column in [f"{name}_id" for name in levels if f"{name}_id" in csv.columns]:
            for node_id, count in csv.group_by(column).len().iter_rows():
                small(f"export csv {column}", node_id, count)
                if str(node_id).endswith(folded_suffix):
                    findings.append(("export csv", f"{count} rows in {node_id}"))
        for text in set(csv["text"]) & hidden_only:
            findings.append(("export csv", f"folded text {text[:80]!r}"))
    for cluster in cli_out["export_json"]:
        items = cluster.get("items", [])
        if cluster["id"].endswith(folded_suffix):
            if items:
                findings.append(("export json", f"{len(items)} items of {cluster['id']}"))
        else:
            small("export json", cluster["id"], len(items))
        hidden_strings("export json", cluster)
    shown_rows = labelled.filter(pl.col("cluster_id") != HIDDEN_ID).height
    for where in ("map", "asset map"):
        page = cli_out[where]
        if page is None:
            findings.append((where, "no map data in the page"))
            continue
        for trace in page["traces"]:
            size = re.search(r"\((\d+)\)$", html.unescape(trace["name"]))
            if size and int(size.group(1)) < least:
                findings.append((where, f"trace {trace['name']!r}"))
            for text in trace["search"]:
                if text in hidden_lower:
                    findings.append((where, f"folded text {text[:80]!r}"))
            for hover in trace["hover"]:
                for node_id in re.findall(r"\b([A-Za-z_0-9]+/-?\d+)\b", html.unescape(hover)):
                    if node_id in sizes:
                        small(f"{where} hover", node_id, sizes[node_id])
                    elif node_id.endswith(folded_suffix):
                        findings.append((f"{where} hover", f"names {node_id}"))
        if page["total"] > shown_rows:
            findings.append((where, f"{page['total']} points for {shown_rows} shown texts"))
    return findings, len(hidden_only)


# --- the LLM slice ---------------------------------------------------------------------------


def llm_slice(built: Built, k: int, folder: Path, configs: Path) -> dict | None:
    """Facets of k conversations (half of them with planted data) from SmolLM2 on llama.cpp's
    server, through `prepare` as `raw_texts` asks them; None without llama-cpp-python."""
    if not llama_server.available():
        return None
    from clustering_dagster.core.config.run_config import (
        FacetsConfig,
        LLMSettings,
        load_run_configs,
    )
    from clustering_dagster.core.data_in.datasets import find_dataset
    from clustering_dagster.core.data_in.prepare import prepare
    from clustering_dagster.core.llm.client import LLMClient
    from clustering_dagster.core.naming.conversation_facets import describe_conversations
    from clustering_dagster_tests.support.workspace import call_cache

    with_pii = [r for r in built.rows if r["planted"]][: k - k // 2]
    without = [r for r in built.rows if not r["planted"]][: k // 2]
    rows = with_pii + without
    if folder.exists():
        shutil.rmtree(folder)
    datasets = folder / "datasets"
    write_messages_jsonl(rows, datasets / "support_slice.jsonl")
    os.environ.setdefault("OPENAI_API_KEY", "dummy")  # a local server takes any key
    cache = call_cache(folder)  # empty: every question goes to the server
    sent_planted, raised, errors, logs = 0, 0, [], []
    started = time.perf_counter()
    with llama_server.LlamaServer(folder / "server.log") as llama:
        settings = LLMSettings(
            model=f"openai/{llama_server.MODEL_ALIAS}",
            api_base=llama.api_base,
            max_concurrency=1,  # one thread serves one request at a time anyway
            chars_per_example=200,
            invalid_retries=1,
            backoff_s=0.1,
        )
        client = LLMClient(settings, cache, log=logs.append)

        def describe(messages: list[list[dict]], offline: pl.DataFrame) -> pl.DataFrame:
            nonlocal sent_planted, raised
            answers = []
            for i, conversation in enumerate(messages):
                shown = json.dumps(conversation, ensure_ascii=False).lower()
                sent_planted += sum(p.lower() in shown for p in built.planted)
                try:
                    answer = client.run(
                        lambda c=conversation, o=offline[i : i + 1]: describe_conversations(
                            client, settings, [c], o
                        )
                    )
                except Exception as err:  # a request that raised: counted, offline facets kept
                    raised += 1
                    errors.append(f"{type(err).__name__}: {err}"[:300])
                    answer = (
                        offline[i : i + 1]
                        .select("request", "task", "language", "concerning")
                        .with_columns(fallback=pl.lit(True))
                    )
                answers.append(answer)
            return pl.concat(answers, how="vertical_relaxed")

        config = load_run_configs(configs)[RUN_CONFIG]
        config = config.model_copy(update={"facets": FacetsConfig(embed="request", llm=settings)})
        prepared = prepare(find_dataset(datasets, "support_slice"), config, describe)
        alive, statuses = llama.alive(), llama.statuses()
    stats = client.stats
    facets = prepared.facets
    out_planted = sum(
        p.lower() in " ".join(str(v) for v in row.values()).lower()
        for row in facets.iter_rows(named=True)
        for p in built.planted
    )
    server_5xx = sum(s >= 500 for s in statuses)
    unhandled = max(0, server_5xx - stats.form_refusals - stats.retries)
    return {
        "conversations": len(rows),
        "with_planted_data": len(with_pii),
        "valid": int((~facets["fallback"]).sum()),
        "fallbacks": int(facets["fallback"].sum()),
        "calls": stats.calls,
        "statuses": sorted(set(statuses)),
        "server_5xx": server_5xx,
        "form_refusals": stats.form_refusals,
        "retries": stats.retries,
        "invalid_replies": stats.invalid_replies,
        "repaired_replies": stats.repaired_replies,
        "raised": raised,
        "alive": alive,
        "server_errors": unhandled + raised + (not alive),
        "planted_sent_to_model": sent_planted,
        "planted_in_facets": out_planted,
        "seconds": round(time.perf_counter() - started, 1),
        "errors": errors,
        "facets": facets.select("conversation_id", "request", "task", "language", "concerning",
                                "fallback").to_dicts(),
    }  # fmt: skip


# --- the run ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="300 conversations, for the tests")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--min-conversations", type=int, default=None, help="the threshold (default 30; smoke 10)"
    )
    args = parser.parse_args()
    scale = SMOKE if args.smoke else FULL
    if args.min_conversations is not None:
        scale = dataclasses.replace(scale, min_conversations=args.min_conversations)
    work = scale.folder
    work.mkdir(parents=True, exist_ok=True)
    database = work / "results.duckdb"
    configs = work / "run_configs.yaml"
    write_run_configs(configs, scale.min_conversations)
    # the run_config partitions are read from this file when the code location is imported
    os.environ["CLUSTERING_RUN_CONFIGS"] = str(configs)
    from clustering_dagster.core.config.run_config import load_run_configs
    from clustering_dagster.core.privacy.exposure import exposures
    from clustering_dagster.core.storage.store import HIDDEN_ID, Partition

    privacy = load_run_configs(configs)[RUN_CONFIG].privacy
    stages = Stages()
    started = time.perf_counter()

    with stages("build"):
        built = add_one_person_topics(
            build_conversations(scale.conversations, seed=args.seed), args.seed
        )
        write_datasets(built, work / "datasets")
    if database.exists():
        forget_projections(database)  # every run projects afresh: UMAP's spread is part of it
    with stages("pipeline_conversations"):
        chats = materialise(database, work / "datasets", DATASET, RUN_CONFIG, configs)
    with stages("pipeline_plain"):
        materialise(database, work / "datasets", PLAIN, RUN_CONFIG, configs)

    texts, assignments, hidden = partition_rows(database, DATASET)
    scores = fine_scores(texts, assignments)
    plain = fine_scores(*partition_rows(database, PLAIN)[:2])
    fidelity = request_fidelity(texts, built)
    import duckdb

    with duckdb.connect(str(database), read_only=True) as conn:
        exposed = exposures(conn, Partition(DATASET, RUN_CONFIG), privacy)

    outputs_folder = work / "outputs"
    if outputs_folder.exists():
        shutil.rmtree(outputs_folder)
    (outputs_folder / "cli").mkdir(parents=True)
    with stages("views"):
        outputs = view_dumps(database, outputs_folder / "views")
    outputs["dagster metadata"] = json.dumps(chats["assets"], ensure_ascii=False, default=str)
    cli = Cli(database, configs, outputs_folder / "cli")
    with stages("cli"):
        cli_out = run_cli(cli, scale, np.random.default_rng(args.seed))
    outputs |= cli.outputs
    with stages("checks"):
        hits = pii_hits(outputs, built)
        findings, hidden_only = privacy_checks(
            cli_out, texts, assignments, privacy.min_conversations
        )
        control = {h["planted"] for h in pii_hits({"owner": owner_originals(database)}, built)}
    with stages("llm"):
        llm = llm_slice(built, scale.llm_conversations, work / "llm", configs)

    finest = hidden.sort("level").row(-1, named=True) if hidden.height else None
    tree_fine = [
        n for n in cli_out["tree"] if n["level"] == max(m["level"] for m in cli_out["tree"])
    ]
    leaked = sorted({h["planted"] for h in hits})
    small_leaks = sum(exposed.values()) + len(findings)
    figures = {
        "conversations": len(built.rows),
        "users": len({r["user_id"] for r in built.rows}),
        "planted": len(built.planted),
        "min_conversations": privacy.min_conversations,
        "min_users": privacy.min_users,
        "clusters_shown": scores["clusters"],
        "clusters_hidden": int(finest["clusters"]) if finest else 0,
        "clusters_hidden_all_levels": int(hidden["clusters"].sum()) if hidden.height else 0,
        "hidden_texts": int(finest["texts"]) if finest else 0,
        "pii_leaks": len(leaked),
        "small_cluster_leaks": small_leaks,
        "fine_nmi": scores["nmi"],
        "fine_ari": scores["ari"],
        "shown_fine_nmi": scores["shown_nmi"],
        "plain_fine_nmi": plain["nmi"],
        "plain_fine_ari": plain["ari"],
        "fine_nmi_gap": round(plain["nmi"] - scores["nmi"], 3),
        "request_has_query": fidelity["share"],
        "llm_server_errors": llm["server_errors"] if llm else None,
        "llm_valid": llm["valid"] if llm else None,
        "llm_fallbacks": llm["fallbacks"] if llm else None,
        "pii_control_found": len(control),
        "outputs_searched": len(outputs),
        "cli_calls": cli.calls,
        "cli_failures": len(cli.failures),
        "seconds": round(time.perf_counter() - started, 1),
        "stage_seconds": stages.seconds,
    }

    print(machine())
    print(
        f"{figures['conversations']} conversations of {figures['users']} users, "
        f"{figures['planted']} planted strings; run configuration {RUN_CONFIG!r}: "
        f"min_conversations {privacy.min_conversations}, min_users {privacy.min_users}, scrub "
        f"{privacy.scrub}; raw_texts scrubbed "
        + ", ".join(
            f"{k.removeprefix('scrubbed_')} {v}"
            for k, v in chats["assets"].get("raw_texts", {}).items()
            if k.startswith("scrubbed_")
        )
    )
    shown_per_level = (
        assignments.filter(pl.col("cluster_id") != HIDDEN_ID)
        .group_by("level", "level_name")
        .agg(shown=pl.col("cluster_id").n_unique())
    )
    with pl.Config(tbl_rows=50, tbl_width_chars=200, fmt_str_lengths=80):
        print(hidden.join(shown_per_level, on=["level", "level_name"], how="left")
              .select("level", "level_name", "shown", hidden_clusters="clusters",
                      hidden_texts="texts"))  # fmt: skip
        print(pl.DataFrame([{"dataset": DATASET} | scores, {"dataset": PLAIN} | plain]))
    print(
        f"tree: {len(cli_out['tree'])} nodes, finest level {len(tree_fine)} "
        f"(folded node included: {any(n['node_id'].endswith('/-2') for n in tree_fine)})"
    )
    print(
        f"the clustered facet holds the conversation's query for {fidelity['share']:.1%} of them; "
        f"the commonest others: {', '.join(fidelity['instead']) or 'none'}"
    )
    print(f"exposures(): {exposed}")
    print(
        f"outputs searched: {len(outputs)} ({cli.calls} CLI calls, {len(cli.failures)} failed), "
        f"{sum(len(v) for v in outputs.values()) / 1e6:.1f} MB; texts only in the folded node: "
        f"{hidden_only}"
    )
    print(
        f"search control: {len(control)} of {len(built.planted)} planted strings found in the "
        "owner's originals (clustering_store.private_rows), by the same search"
    )
    for failure in cli.failures:
        print(f"  CLI failure: {failure}")
    for hit in hits:
        print(f"  LEAK {hit['kind']} {hit['planted']!r} in {hit['output']} ({hit['form']}): "
              f"...{hit['context']}...")  # fmt: skip
    for where, what in findings:
        print(f"  BELOW THRESHOLD {where}: {what}")
    if llm is None:
        print("LLM slice: llama-cpp-python is not installed: llm_server_errors null")
    else:
        print(
            "LLM slice (SmolLM2-135M on llama.cpp, 1 thread): "
            + ", ".join(f"{k} {v}" for k, v in llm.items() if k not in ("facets", "errors"))
        )
        for error in llm["errors"]:
            print(f"  raised: {error}")
        for row in llm["facets"]:
            print(f"  {row}")
    print("stage seconds: " + ", ".join(f"{k} {v}" for k, v in stages.seconds.items()))
    for name, (holds, bar) in BARS.items():
        value = figures[name]
        state = "n/a" if value is None else "met" if holds(value) else "UNMET"
        print(f"bar {name} {bar}: {value} {state}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
