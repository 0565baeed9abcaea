"""Conversation datasets through the real pipeline, and the privacy guarantee over every output.

Support conversations with fake personal data planted on purpose (`support/conversations.py`)
are materialised for real: the same 150 conversations in each format (messages JSONL, lmsys
Parquet, turns CSV) beside a broken dataset; 400 conversations under `private` (scrubbed, no
cluster of fewer than 15 conversations or 3 users shown), then under a `default` without a
threshold; 40 conversations whose facets an LLM (the test server, over real HTTP) writes. Every
view, every CLI command (in its own process, as a user runs it), every export and the map are
searched for the planted strings (as written in any case, and numbers by their digits) and for
the conversations the threshold folds away; only the owner's `clustering_store.private_rows`
keeps the originals."""

import html
import io
import json
import os
import re
import subprocess
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
import yaml
from dagster._serdes import serialize_value

from clustering_dagster.assets import LLM_ASSETS, raw_texts
from clustering_dagster.cli import main
from clustering_dagster.core.config.run_config import PrivacyConfig
from clustering_dagster.core.privacy.exposure import exposures
from clustering_dagster.core.storage.store import HIDDEN_ID, Partition, connect

from .support.conversations import (
    Built,
    build_conversations,
    turns_frame,
    write_lmsys_parquet,
    write_messages_jsonl,
    write_turns_csv,
)
from .support.explored import CLI
from .support.openai_server import OpenAICompatibleServer, answer
from .support.paths import SHIPPED_CONFIGS
from .support.workspace import Workspace, metadata

DATASET = "chats"
MIN_CONVERSATIONS, MIN_USERS = 15, 3
FORMATS = {"fmt_messages": "messages", "fmt_lmsys": "lmsys", "fmt_turns": "turns"}
BROKEN = "broken_turns"
MODEL = "openai/gpt-4o-mini"
NUMBER_KINDS = {"phone", "card", "iban", "ip"}  # also searched for by their digits
MIN_DIGITS = 8  # fewer digits could turn up by chance
# A number as people and programs write it: digits with spaces, dots, dashes, brackets, '+', '/'.
NUMBER_RUN = re.compile(r"\d(?:[\d \u00a0().+\-/]*\d)?")
CONVERSATION_ID = re.compile(r"\bc\d{6}\b")
FACET_COLUMNS = [
    "conversation_id", "request", "first_user_turn", "task", "language", "concerning",
    "user_turns", "assistant_turns", "turns", "chars", "fallback",
]  # fmt: skip


# --- helpers ---------------------------------------------------------------------------------


def run_cli(db: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """`clustering-dagster --db DB ARGS` in a fresh process."""
    return subprocess.run(
        [str(CLI), "--db", str(db), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"},
    )


def call_cli(db: Path, *args: str) -> subprocess.CompletedProcess:
    """The same command through the same entry point in this process: for the loops over every
    node, which would otherwise start a process (~1 s of imports) per node."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["--db", str(db), *args])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def cli_json(db: Path, *args: str, own_process: bool = False):
    done = (run_cli if own_process else call_cli)(db, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def flat(value) -> str:
    """Every string and number inside a JSON-like value, one a line."""
    if isinstance(value, dict):
        return "\n".join(flat(v) for v in value.values())
    if isinstance(value, list | tuple):
        return "\n".join(flat(v) for v in value)
    return "" if value is None else str(value)


def planted_in(text: str, built: Built) -> list[str]:
    """The planted strings found in `text`: as written (in any case), or a number's digits inside
    one written number (however it is spaced, grouped or punctuated)."""
    lowered = html.unescape(text).lower()
    runs = "|".join(digits(run) for run in NUMBER_RUN.findall(text))
    found = []
    for value in built.planted:
        number = digits(value)
        if value.lower() in lowered or (
            built.kinds[value] in NUMBER_KINDS and len(number) >= MIN_DIGITS and number in runs
        ):
            found.append(value)
    return found


@dataclass(frozen=True)
class Hidden:
    """What the threshold folds away: the conversations' ids and their clustered texts."""

    ids: set[str]
    texts: set[str]

    def found_in(self, text: str) -> list[str]:
        lowered = text.lower()
        ids = sorted(self.ids & set(CONVERSATION_ID.findall(text)))
        return ids + [t[:60] for t in self.texts if t.lower() in lowered]


def assert_nothing_shown(what: str, text: str, built: Built, hidden: Hidden) -> None:
    leaked = planted_in(text, built)
    assert leaked == [], f"{what} shows planted personal data: {leaked[:5]}"
    shown = hidden.found_in(text)
    assert shown == [], f"{what} shows conversations below the privacy threshold: {shown[:5]}"


def failure_text(result) -> str:
    return result.get_step_failure_events()[0].step_failure_data.error.to_string()


def configs_with(**changes: dict) -> str:
    """The shipped run configurations with some replaced (their names are partition keys)."""
    configs = yaml.safe_load(SHIPPED_CONFIGS.read_text())
    return yaml.safe_dump(configs | changes)


# --- materialised once per module ------------------------------------------------------------


@dataclass(frozen=True)
class Private:
    workspace: Workspace
    built: Built
    result: object  # the materialisation under `private`

    @property
    def db(self) -> Path:
        return self.workspace.database

    def sql(self, query: str, params=None) -> pl.DataFrame:
        return self.workspace.sql(query, params)

    def where(self, run_config: str = "private") -> list[str]:
        return [DATASET, run_config]


@pytest.fixture(scope="module")
def private(tmp_path_factory) -> Private:
    """400 conversations (30% with planted personal data) clustered by their whole text under
    `private`: scrubbed, no cluster of fewer than 15 conversations or 3 users shown. `default` is
    the same clustering without a threshold (materialised by the `unthresholded` fixture)."""
    workspace = Workspace(tmp_path_factory.mktemp("private"))
    built = build_conversations(400, seed=3, pii_share=0.3)
    write_messages_jsonl(built.rows, workspace.datasets / f"{DATASET}.jsonl")
    shipped = yaml.safe_load(SHIPPED_CONFIGS.read_text())
    private = shipped["private"] | {
        "facets": {"embed": "conversation", "llm": None},
        "privacy": {"min_conversations": MIN_CONVERSATIONS, "min_users": MIN_USERS, "scrub": True},
    }
    unthresholded = private | {"privacy": {"scrub": True}, "description": "no threshold"}
    workspace.write_configs(configs_with(private=private, default=unthresholded))
    result = workspace.materialize(DATASET, "private")
    assert result.success
    return Private(workspace, built, result)


@pytest.fixture(scope="module")
def hidden(private) -> Hidden:
    """The conversations folded below the threshold, read from the store (no view shows them)."""
    rows = private.sql(
        """
        SELECT t.text_id, t.text FROM clustering_store.texts t
        JOIN clustering.published p ON p.table_name = 'texts' AND p.dataset = t.dataset
          AND p.run_config = t.run_config AND p.version = t.version
        WHERE t.dataset = ? AND t.run_config = ? AND t.row_idx NOT IN (
            SELECT row_idx FROM clustering.texts WHERE dataset = ? AND run_config = ?)
        """,
        private.where() * 2,
    )
    assert rows.height > 0
    return Hidden(set(rows["text_id"]), set(rows["text"]))


@pytest.fixture(scope="module")
def unthresholded(private):
    """The same dataset under `default`: the same scrubbed texts and clustering, no threshold."""
    result = private.workspace.materialize(DATASET, "default")
    assert result.success
    return result


@dataclass(frozen=True)
class Formats:
    workspace: Workspace
    built: Built
    results: dict
    broken: object  # the failed materialisation of the broken dataset
    broken_path: Path
    broken_row: int  # 1-based, the header not counted


@pytest.fixture(scope="module")
def formats(tmp_path_factory) -> Formats:
    """The same 150 conversations as messages JSONL, lmsys Parquet and turns CSV, and a turns CSV
    with an unknown role, in one datasets folder; the broken one is materialised first."""
    workspace = Workspace(tmp_path_factory.mktemp("formats"))
    built = build_conversations(150, seed=11, pii_share=0.3)
    write_messages_jsonl(built.rows, workspace.datasets / "fmt_messages.jsonl")
    write_lmsys_parquet(built.rows, workspace.datasets / "fmt_lmsys.parquet")
    write_turns_csv(built.rows, workspace.datasets / "fmt_turns.csv")
    broken_path = write_turns_csv(built.rows[:20], workspace.datasets / f"{BROKEN}.csv")
    turns = turns_frame(built.rows[:20])
    index = next(i for i, role in enumerate(turns["role"]) if role == "assistant")
    turns.with_columns(
        role=pl.when(pl.int_range(pl.len()) == index).then(pl.lit("robot")).otherwise("role")
    ).write_csv(broken_path)
    broken = workspace.materialize(BROKEN, "default", raise_on_error=False)
    results = {name: workspace.materialize(name, "default") for name in FORMATS}
    return Formats(workspace, built, results, broken, broken_path, index + 1)


# --- 1. every format, end to end -------------------------------------------------------------


def test_every_format_gives_the_same_conversations_and_facets(formats):
    built, workspace = formats.built, formats.workspace
    ids = sorted(r["conversation_id"] for r in built.rows)
    messages = sum(len(r["messages"]) for r in built.rows)
    mine = "WHERE dataset = ? AND run_config = 'default'"
    facets = {}
    for name, fmt in FORMATS.items():
        assert formats.results[name].success
        raw = metadata(formats.results[name], "raw_texts")
        assert (raw["kind"], raw["conversations"], raw["messages"]) == (
            "conversations",
            len(ids),
            messages,
        ), fmt
        assert raw["texts"] == len(ids) and raw["text_column"] == "request"
        texts = workspace.sql(
            f"SELECT text_id, text FROM clustering.texts {mine} ORDER BY text_id", [name]
        )
        assert texts["text_id"].to_list() == ids, fmt
        facets[fmt] = workspace.sql(
            f"SELECT {', '.join(FACET_COLUMNS)} FROM clustering.facets {mine} "
            "ORDER BY conversation_id",
            [name],
        )
        assert facets[fmt].height == len(ids)
        assert texts["text"].to_list() == facets[fmt]["request"].to_list()  # the facet clustered
        assigned = workspace.sql(
            f"SELECT count(DISTINCT row_idx) AS n FROM clustering.assignments {mine}", [name]
        )
        assert assigned["n"][0] == len(ids)  # clustered through to the end
        nodes = workspace.sql(f"SELECT count(*) AS n FROM clustering.hierarchy {mine}", [name])
        assert nodes["n"][0] > 0
    assert facets["lmsys"].equals(facets["messages"])
    assert facets["turns"].equals(facets["messages"])


def test_a_broken_dataset_fails_its_own_run_naming_file_row_and_column(formats):
    assert not formats.broken.success
    failure = failure_text(formats.broken)
    expected = (
        f"{formats.broken_path}, row {formats.broken_row}: column 'role' has role str \"robot\""
    )
    assert expected in failure, failure
    # the other datasets of the folder materialised after it, and it published nothing
    assert all(result.success for result in formats.results.values())
    published = formats.workspace.sql("SELECT DISTINCT dataset FROM clustering.texts ORDER BY 1")
    assert published["dataset"].to_list() == sorted(FORMATS)


# --- 2. privacy across every output ----------------------------------------------------------


def test_the_leak_search_finds_planted_data_however_it_is_written(formats):
    """The search the privacy tests rely on: unscrubbed (`default`), the requests hold planted
    strings and it finds them; a number is found by its digits however it is grouped."""
    built = formats.built
    requests = formats.workspace.sql(
        "SELECT text FROM clustering.texts WHERE dataset = 'fmt_messages' "
        "AND run_config = 'default'"
    )
    requests = "\n".join(requests["text"])
    present = [value for value in built.planted if value in requests]
    assert present and set(present) <= set(planted_in(requests, built))
    numbers = [v for v in built.planted if built.kinds[v] in NUMBER_KINDS]
    for value in numbers:
        if len(digits(value)) >= MIN_DIGITS:
            assert planted_in(f"it is {digits(value)}.", built) == [value]
            assert planted_in(f"it is ({' '.join(digits(value))}) ok", built) == [value]
    assert planted_in(built.planted[0].upper(), built) == [built.planted[0]]
    assert planted_in("none: 0.123456789 c000001 [EMAIL] [PHONE] [CARD]", built) == []


def test_scrubbing_counts_every_planted_string_and_the_owner_keeps_them(private):
    built = private.built
    raw = metadata(private.result, "raw_texts")
    assert {
        k.removeprefix("scrubbed_"): v for k, v in raw.items() if k.startswith("scrubbed_")
    } == (dict(Counter(built.kinds.values())))
    originals = private.sql(
        "SELECT row_idx, user_id, original FROM clustering_store.private_rows r "
        "JOIN clustering.published p ON p.table_name = 'private_rows' AND p.dataset = r.dataset "
        "AND p.run_config = r.run_config AND p.version = r.version "
        "WHERE r.dataset = ? AND r.run_config = ?",
        private.where(),
    )
    assert originals.height == len(built.rows)
    assert set(originals["user_id"]) == {r["user_id"] for r in built.rows}
    kept = "\n".join(m["content"] for o in originals["original"] for m in json.loads(o)["messages"])
    assert [value for value in built.planted if value not in kept] == []  # nothing lost
    views = private.sql(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'clustering'"
    )["table_name"].to_list()
    assert "private_rows" not in views and "texts" in views and "facets" in views


def test_no_view_shows_planted_data_or_a_folded_conversation(private, hidden):
    columns = private.sql(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'clustering'"
    )
    dumped = {}
    for (name,), cols in columns.group_by("table_name", maintain_order=True):
        names = set(cols["column_name"])
        text = cols.filter(pl.col("data_type").str.contains("VARCHAR|JSON"))["column_name"]
        if text.is_empty():
            continue
        where = (
            " WHERE dataset = ? AND run_config = ?" if {"dataset", "run_config"} <= names else ""
        )
        selected = ", ".join(f'"{c}"::VARCHAR' for c in text)
        rows = private.sql(
            f"SELECT {selected} FROM clustering.{name}{where}",
            private.where() if where else None,
        )
        dumped[name] = "\n".join("\n".join(str(v) for v in row) for row in rows.iter_rows())
    assert {"texts", "facets", "cluster_labels", "hierarchy", "materializations"} <= set(dumped)
    for name, text in dumped.items():
        assert_nothing_shown(f"view clustering.{name}", text, private.built, hidden)
    shown = private.sql(
        "SELECT count(*) AS n FROM clustering.texts WHERE dataset = ? AND run_config = ?",
        private.where(),
    )["n"][0]
    assert shown + len(hidden.ids) == len(private.built.rows)


def test_no_planted_data_in_the_dagster_run(private, hidden):
    """What the Dagster UI shows of the run: every event, log message and metadata value."""
    events = private.workspace.instance.all_logs(private.result.run_id)
    text = "\n".join(serialize_value(event) for event in events)
    assert "texts_below_privacy_threshold" in text
    assert_nothing_shown("the Dagster event log", text, private.built, hidden)


def test_metadata_columns_are_scrubbed_too(tmp_path):
    workspace = Workspace(tmp_path)
    built = build_conversations(30, seed=2, pii_share=1.0)
    with open(workspace.datasets / "noted.jsonl", "w", encoding="utf-8") as f:
        for row in built.rows:
            note = {"note": "customer said: " + ", ".join(row["planted"])}
            messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
            f.write(json.dumps({"id": row["conversation_id"], "messages": messages} | note) + "\n")
    (workspace.datasets / "noted.yaml").write_text(
        "kind: conversations\nid_column: id\nmetadata_columns: [note]\n"
    )
    config = {"levels": [{"name": "fine", "method": "kmeans", "k": 2}], "privacy": {"scrub": True}}
    workspace.write_configs(yaml.safe_dump({"private": config}))
    assert workspace.materialize("noted", "private", assets=[raw_texts]).success
    shown = workspace.sql("SELECT text, metadata FROM clustering.texts")
    assert shown.height == len(built.rows)
    assert planted_in("\n".join(shown["text"]), built) == []  # the messages are scrubbed
    assert planted_in("\n".join(shown["metadata"]), built) == []


def test_tree_show_and_texts_show_nothing_private(private, hidden):
    db, built = private.db, private.built
    outputs = {"datasets": flat(cli_json(db, "datasets")), "runs": flat(cli_json(db, "runs"))}
    nodes = cli_json(db, "tree", DATASET, "-r", "private", own_process=True)
    outputs["tree"] = flat(nodes)
    for node in nodes:
        shown = cli_json(db, "show", DATASET, node["node_id"], "-r", "private", "-n", "20")
        outputs[f"show {node['node_id']}"] = flat(shown)
        if node["n_children"] == 0:
            listed = cli_json(
                db, "texts", DATASET, node["node_id"], "-r", "private", "--limit", "0"
            )
            assert len(listed) == (0 if node["cluster_id"] == HIDDEN_ID else node["size"])
            outputs[f"texts {node['node_id']}"] = flat(listed)
    printed = run_cli(db, "show", DATASET, nodes[0]["node_id"], "-r", "private", "-n", "20")
    outputs["show (printed)"] = printed.stdout
    for what, text in outputs.items():
        assert_nothing_shown(what, text, built, hidden)
    assert any("[EMAIL]" in text for text in outputs.values())  # scrubbed texts are shown


@pytest.fixture(scope="module")
def searched(private, hidden) -> list[dict]:
    """`search -` in one process (the model loads once): the requests of 8 folded conversations,
    then queries for personal data; clusters and texts, 25 each."""
    requests = private.sql(
        "SELECT f.request FROM clustering_store.facets f JOIN clustering.published p "
        "ON p.table_name = 'facets' AND p.dataset = f.dataset AND p.run_config = f.run_config "
        "AND p.version = f.version WHERE f.dataset = ? AND f.run_config = ? "
        "AND list_contains(?, f.conversation_id) ORDER BY f.row_idx LIMIT 8",
        [*private.where(), sorted(hidden.ids)],
    )["request"].to_list()
    queries = [*requests, "my card number", "what is my email address", "refund to my account"]
    done = run_cli(
        private.db, "search", "-", "-d", DATASET, "-r", "private", "-n", "25", "--json",
        stdin="\n".join(queries) + "\n",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert [a["query"] for a in answers] == queries
    return answers


def test_search_finds_no_folded_conversation_nor_planted_data(private, hidden, searched):
    assert all(len(a["texts"]) == 25 for a in searched)
    for found in searched:
        # a query is a folded conversation's own words: the answer is searched without it
        hits = {k: v for k, v in found.items() if k != "query"}
        assert_nothing_shown(f"search {found['query']!r}", flat(hits), private.built, hidden)


def test_search_never_offers_the_folded_node(searched):
    found = [hit["node_id"] for result in searched for hit in result["clusters"]]
    assert [node for node in found if node.endswith(f"/{HIDDEN_ID}")] == []


def test_exports_hold_no_planted_data_nor_folded_conversations(private, hidden, tmp_path):
    db, built = private.db, private.built
    shown = private.sql(
        "SELECT text_id FROM clustering.texts WHERE dataset = ? AND run_config = ?",
        private.where(),
    )["text_id"]
    for fmt in ("csv", "json", "parquet"):
        out = tmp_path / f"export.{fmt}"
        done = run_cli(db, "export", DATASET, "-r", "private", "--format", fmt, "--out", str(out))
        assert done.returncode == 0, done.stderr
        if fmt == "parquet":
            table = pl.read_parquet(out)
            text = "\n".join(flat(row) for row in table.rows())
        else:
            text = out.read_text(encoding="utf-8")
            table = pl.read_csv(out) if fmt == "csv" else None
        assert_nothing_shown(f"export --format {fmt}", text, built, hidden)
        if table is not None:
            assert sorted(table["text_id"]) == sorted(shown)
            assert {"language", "user_turns", "concerning"} <= set(table.columns)  # facets
        else:
            clusters = json.loads(text)
            assert sorted(i["id"] for c in clusters for i in c["items"]) == sorted(shown)
            folded = [c for c in clusters if c["id"].endswith(f"/{HIDDEN_ID}")]
            assert [c["items"] for c in folded] == [[]] * len(folded)  # a count at most


def test_the_maps_show_no_planted_data_nor_folded_conversations(private, hidden, tmp_path):
    out = tmp_path / "map.html"
    done = run_cli(private.db, "map", DATASET, "-r", "private", "--out", str(out))
    assert done.returncode == 0, done.stderr
    asset_map = private.db.parent / "maps" / f"{DATASET}__private.html"
    for path in (out, asset_map):
        page = path.read_text(encoding="utf-8")
        embedded = re.search(
            r'<script id="map-data" type="application/json">(.*?)</script>', page, re.S
        )
        data = json.loads(embedded.group(1))
        points = sum(len(trace["x"]) for trace in data["traces"])
        assert points == data["total"] == len(private.built.rows) - len(hidden.ids)
        hovers = [h.replace("<br>", "\n") for trace in data["traces"] for h in trace["hover"]]
        searched = [t for trace in data["traces"] for t in trace["search"]]
        text = flat(data) + "\n" + "\n".join(hovers)
        assert_nothing_shown(f"the map {path.name} (data)", text, private.built, hidden)
        lowered = page.lower()  # and nowhere else in the page (plotly.js is too full of digits)
        assert [p for p in private.built.planted if p.lower() in lowered] == []
        assert not {t.lower() for t in hidden.texts} & set(searched)


# --- 3. the threshold ------------------------------------------------------------------------


def test_small_clusters_are_folded_into_one_node_per_level(private):
    hidden = private.sql(
        "SELECT level_name, clusters, texts FROM clustering.hidden_clusters "
        "WHERE dataset = ? AND run_config = ? ORDER BY level",
        private.where(),
    )
    assert hidden["clusters"].sum() >= 1 and hidden["texts"].min() > 0
    folded = int(hidden["texts"][0])
    nodes = cli_json(private.db, "tree", DATASET, "-r", "private")
    levels = hidden["level_name"].to_list()
    assert [n["node_id"] for n in nodes if n["cluster_id"] == HIDDEN_ID] == [
        f"{level}/{HIDDEN_ID}" for level in levels
    ]
    for node in nodes:
        if node["cluster_id"] == HIDDEN_ID:
            assert node["size"] == folded and node["name"] == "Below the privacy threshold"
        else:
            assert node["size"] >= MIN_CONVERSATIONS, node
    tops = [n for n in nodes if n["level"] == 0]
    assert sum(n["size"] for n in tops) == len(private.built.rows)
    # and at least MIN_USERS people in every cluster shown, counted from the owner's rows
    users = private.sql(
        """
        SELECT a.level_name, a.cluster_id, count(DISTINCT r.user_id) AS users
        FROM clustering.assignments a JOIN clustering_store.private_rows r USING (row_idx)
        JOIN clustering.published p ON p.table_name = 'private_rows' AND p.dataset = r.dataset
          AND p.run_config = r.run_config AND p.version = r.version
        WHERE a.dataset = ? AND a.run_config = ? AND r.dataset = a.dataset
          AND r.run_config = a.run_config AND a.cluster_id <> -2
        GROUP BY ALL
        """,
        private.where(),
    )
    assert users.height == len(nodes) - len(levels) and users["users"].min() >= MIN_USERS

    leaf = f"{levels[-1]}/{HIDDEN_ID}"
    shown = cli_json(private.db, "show", DATASET, leaf, "-r", "private", own_process=True)
    assert shown["size"] == folded and shown["typical_texts"] == [] and shown["facets"] is None
    assert cli_json(private.db, "texts", DATASET, leaf, "-r", "private", "--limit", "0") == []
    printed = run_cli(private.db, "texts", DATASET, leaf, "-r", "private")
    assert printed.returncode == 0 and "(0 shown)" in printed.stdout

    checks = {c.check_name: c for c in private.result.get_asset_check_evaluations()}
    check = checks["privacy_threshold"]
    values = {k: v.value for k, v in check.metadata.items()}
    assert check.passed and values["min_conversations"] == MIN_CONVERSATIONS
    assert values["small_clusters"] == values["few_user_clusters"] == 0
    assert values["hidden_texts_shown"] == 0
    levels_md = metadata(private.result, "cluster_levels")
    assert levels_md["texts_below_privacy_threshold"] == folded


def test_under_a_threshold_texts_not_yet_clustered_are_not_shown(formats):
    """Read but not yet clustered under `private` (as shipped): the views show none of them."""
    result = formats.workspace.materialize("fmt_messages", "private", assets=[raw_texts])
    assert result.success
    where = ["fmt_messages", "private"]
    for view in ("texts", "facets"):
        shown = formats.workspace.sql(
            f"SELECT count(*) AS n FROM clustering.{view} WHERE dataset = ? AND run_config = ?",
            where,
        )
        assert shown["n"][0] == 0, view
    stored = formats.workspace.sql(
        "SELECT count(*) AS n FROM clustering_store.texts WHERE dataset = ? AND run_config = ?",
        where,
    )
    assert stored["n"][0] == len(formats.built.rows)


def test_without_a_threshold_every_cluster_is_shown(private, unthresholded):
    hidden = private.sql(
        "SELECT level_name, clusters FROM clustering.hidden_clusters "
        "WHERE dataset = ? AND run_config = ? ORDER BY level",
        private.where(),
    )
    nodes = cli_json(private.db, "tree", DATASET, "-r", "default")
    assert all(n["cluster_id"] != HIDDEN_ID for n in nodes)
    tops = [n for n in nodes if n["level"] == 0]
    assert sum(n["size"] for n in tops) == len(private.built.rows)
    texts = private.sql(
        "SELECT count(*) AS n FROM clustering.texts WHERE dataset = ? AND run_config = ?",
        private.where("default"),
    )
    assert texts["n"][0] == len(private.built.rows)
    assert metadata(unthresholded, "projections")["method"] == f"reused from {DATASET}|private"
    # the same clustering: the clusters `private` folded are there, each as its own node
    finest = hidden["level_name"][-1]
    folded = [
        n["size"]
        for n in cli_json(private.db, "tree", DATASET, "-r", "private")
        if n["level_name"] == finest
    ]
    kept = Counter(folded[:-1])  # the folded node comes last
    sizes = Counter(n["size"] for n in nodes if n["level_name"] == finest)
    assert kept <= sizes and (sizes - kept).total() == hidden["clusters"][-1]
    assert sum((sizes - kept).elements()) == folded[-1]
    check = {c.check_name: c for c in unthresholded.get_asset_check_evaluations()}
    assert check["privacy_threshold"].passed


def private_folded_clusters(private) -> int:
    folded = private.sql(
        "SELECT sum(clusters) AS n FROM clustering.hidden_clusters "
        "WHERE dataset = ? AND run_config = ?",
        private.where(),
    )
    return int(folded["n"][0])


def test_the_check_finds_what_a_threshold_would_hide(private, unthresholded):
    """`exposures`, behind the asset check: the partition without a threshold, held to
    `private`'s threshold, exposes (at least) the clusters `private` folded."""
    with connect(private.db) as conn:
        exposed = exposures(
            conn,
            Partition(DATASET, "default"),
            PrivacyConfig(min_conversations=MIN_CONVERSATIONS, min_users=MIN_USERS),
        )
        held = exposures(
            conn,
            Partition(DATASET, "private"),
            PrivacyConfig(min_conversations=MIN_CONVERSATIONS, min_users=MIN_USERS),
        )
    assert exposed["small_clusters"] >= private_folded_clusters(private)
    assert held == {"small_clusters": 0, "few_user_clusters": 0, "hidden_texts_shown": 0}


# --- 4. facets -------------------------------------------------------------------------------


def offline_facets(formats: Formats) -> tuple[pl.DataFrame, dict]:
    facets = formats.workspace.sql(
        f"SELECT {', '.join(FACET_COLUMNS)} FROM clustering.facets WHERE dataset = 'fmt_messages' "
        "AND run_config = 'default'"
    )
    return facets, {row["conversation_id"]: row for row in facets.iter_rows(named=True)}


def test_offline_facets_of_the_english_sample(formats):
    facets, by_id = offline_facets(formats)
    for conversation in formats.built.rows:
        row, messages = by_id[conversation["conversation_id"]], conversation["messages"]
        roles = Counter(m["role"] for m in messages)
        assert (row["user_turns"], row["assistant_turns"], row["turns"]) == (
            roles["user"],
            roles["assistant"],
            len(messages),
        )
        assert row["chars"] == sum(len(" ".join(m["content"].split())) for m in messages)
        users = [" ".join(m["content"].split()) for m in messages if m["role"] == "user"]
        assert row["first_user_turn"] == users[0]
    assert set(facets["language"]) == {"en"}
    assert facets["concerning"].null_count() == facets["task"].null_count() == facets.height
    assert not facets["fallback"].any()


def test_the_offline_request_is_the_question_not_a_greeting(formats):
    _, by_id = offline_facets(formats)
    wrong = [
        (by_id[c["conversation_id"]]["request"], c["query"])
        for c in formats.built.rows
        if " ".join(c["query"].split()) not in by_id[c["conversation_id"]]["request"]
    ]
    assert wrong == []


def test_show_prints_facets_and_facet_filters_select_texts(private):
    db = private.db
    nodes = cli_json(db, "tree", DATASET, "-r", "private", "--depth", "1")
    top = max((n for n in nodes if n["cluster_id"] != HIDDEN_ID), key=lambda n: n["size"])
    printed = run_cli(db, "show", DATASET, top["node_id"], "-r", "private")
    assert printed.returncode == 0, printed.stderr
    line = next(x for x in printed.stdout.splitlines() if x.startswith("facets:"))
    assert f"facets: {top['size']} conversations; languages en 100%" in line
    assert "concerning n/a (offline facets)" in line
    shown = cli_json(db, "show", DATASET, top["node_id"], "-r", "private")
    assert shown["facets"]["conversations"] == top["size"]
    assert (
        shown["facets"]["languages"] == {"en": 1.0} and shown["facets"]["mean_concerning"] is None
    )

    texts = ["texts", DATASET, top["node_id"], "-r", "private", "--limit", "0"]
    everything = cli_json(db, *texts)
    assert len(cli_json(db, *texts, "--facet", "language=en")) == len(everything) == top["size"]
    assert cli_json(db, *texts, "--facet", "language=fr") == []
    assert cli_json(db, *texts, "--facet", "concerning>=3") == []  # null offline
    several = cli_json(db, *texts, "--facet", "user_turns>1", "--facet", "language=en")
    turns = private.sql(
        "SELECT text_id FROM clustering.facets f JOIN clustering.texts t "
        "USING (dataset, run_config, row_idx) WHERE f.dataset = ? AND f.run_config = ? "
        "AND f.user_turns > 1",
        private.where(),
    )
    assert 0 < len(several) < len(everything)
    assert {t["text_id"] for t in several} == {t["text_id"] for t in everything} & set(
        turns["text_id"]
    )

    search = ["search", "card", "-d", DATASET, "-r", "private", "--texts", "-n", "5"]
    assert len(cli_json(db, *search, "--facet", "language=en")["texts"]) == 5
    assert cli_json(db, *search, "--facet", "language=fr")["texts"] == []
    export = call_cli(
        db, "export", DATASET, "-r", "private", "--format", "csv", "--facet", "language=fr"
    )
    assert export.returncode == 0 and pl.read_csv(export.stdout.encode()).height == 0

    for args in (texts, search, ["export", DATASET, "-r", "private", "--format", "csv"]):
        done = run_cli(db, *args, "--facet", "colour=red")
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and done.stdout == "", done
        assert len(lines) == 1 and lines[0].startswith("error: --facet 'colour=red'"), lines
        assert "Traceback" not in done.stderr


# --- 5. LLM facets in the pipeline -----------------------------------------------------------


def test_llm_facets_come_from_the_model_once_and_then_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    workspace = Workspace(tmp_path)  # a fresh results file: raw_texts is its first writer
    built = build_conversations(40, seed=5, pii_share=0.3)
    write_messages_jsonl(built.rows, workspace.datasets / "llm_chats.jsonl")
    with OpenAICompatibleServer() as server:
        llm = {"model": MODEL, "api_base": server.api_base, "timeout_s": 5, "max_retries": 2}
        config = {
            "levels": [{"name": "fine", "method": "kmeans", "k": 4}],
            "facets": {"embed": "request", "llm": llm | {"backoff_s": 0.01}},
            "privacy": {"scrub": True},
        }
        workspace.write_configs(yaml.safe_dump({"llm_example": config}))
        first = workspace.materialize("llm_chats", "llm_example", assets=[raw_texts])
        asked = server.chats()
        second = workspace.materialize("llm_chats", "llm_example", assets=[raw_texts])
        assert len(server.chats()) == len(asked)  # the second run asked nothing
    assert first.success and second.success
    assert server.chat_tasks() == ["conversation_facets"] * len(built.rows)

    raw = metadata(first, "raw_texts")
    assert (raw["llm_calls"], raw["llm_cache_hits"], raw["facet_fallbacks"]) == (40, 0, 0)
    again = metadata(second, "raw_texts")
    assert (again["llm_calls"], again["llm_cache_hits"]) == (0, 40)

    facets = workspace.sql("SELECT * FROM clustering.facets ORDER BY row_idx")
    assert facets.height == len(built.rows) and not facets["fallback"].any()
    assert set(facets["language"]) == {"en"} and set(facets["concerning"]) == {1}
    replies = [json.loads(answer(request)) for request in asked]
    assert sorted(facets["request"]) == sorted(r["request"] for r in replies)
    assert sorted(facets["task"]) == sorted(r["task"] for r in replies)
    texts = workspace.sql("SELECT text FROM clustering.texts ORDER BY row_idx")["text"]
    assert texts.to_list() == facets["request"].to_list()  # the model's request is clustered

    # the model saw scrubbed conversations only, and nothing it answered holds personal data
    sent = "\n".join(m["content"] for request in asked for m in request["messages"])
    assert "[EMAIL]" in sent or "[PHONE]" in sent
    assert planted_in(sent, built) == []
    calls = workspace.sql("SELECT answer FROM clustering.llm_calls")
    assert calls.height == len(built.rows)
    assert planted_in("\n".join(calls["answer"]), built) == []


# --- 6. an LLM naming the clusters under the threshold (last: it names the `private` tree) ----


def test_an_llm_naming_the_clusters_is_shown_no_folded_conversation(private, hidden, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    visible = "\n".join(
        private.sql(
            "SELECT text FROM clustering.texts WHERE dataset = ? AND run_config = ?",
            private.where(),
        )["text"]
    )
    folded = private.sql(
        "SELECT f.request FROM clustering_store.facets f JOIN clustering.published p "
        "ON p.table_name = 'facets' AND p.dataset = f.dataset AND p.run_config = f.run_config "
        "AND p.version = f.version WHERE f.dataset = ? AND f.run_config = ? "
        "AND list_contains(?, f.conversation_id)",
        [*private.where(), sorted(hidden.ids)],
    )["request"]
    folded = [r for r in folded if r not in visible]  # said in no conversation shown
    assert len(folded) > len(hidden.ids) / 2
    shipped = yaml.safe_load(private.workspace.configs.read_text())
    with OpenAICompatibleServer() as server:
        fake = {"model": MODEL, "api_base": server.api_base, "timeout_s": 5, "max_retries": 2}
        fake |= {"backoff_s": 0.01, "merge_ratio": 3, "neighbourhood_size": 8}
        labeler = {"kind": "llm", "summaries": {"fake": fake}}
        private.workspace.write_configs(
            configs_with(private=shipped["private"] | {"labeler": labeler})
        )
        result = private.workspace.materialize(DATASET, "private", assets=LLM_ASSETS)
        prompts = "\n".join(m["content"] for r in server.chats() for m in r["messages"])
    assert result.success and server.chat_tasks().count("cluster_description") >= 1
    prompts = html.unescape(prompts)
    assert planted_in(prompts, private.built) == []
    assert [r for r in folded if r in prompts] == []
    nodes = cli_json(private.db, "tree", DATASET, "-r", "private")
    folded_nodes = [n for n in nodes if n["cluster_id"] == HIDDEN_ID]
    assert folded_nodes and {n["name"] for n in folded_nodes} == {"Below the privacy threshold"}
    assert any(n["level_name"].startswith("parent_") for n in nodes)  # the LLM's merged tree
    assert all(n["size"] >= MIN_CONVERSATIONS for n in nodes if n["cluster_id"] != HIDDEN_ID)
    assert_nothing_shown("the LLM-named tree", flat(nodes), private.built, hidden)


def test_people_may_rename_and_merge_but_not_pick_texts_into_clusters_under_a_threshold(
    private, tmp_path
):
    """Under a privacy threshold a split or a text move would show a cluster of a few chosen
    conversations: both are refused in one line; renames and merges keep every shown cluster at
    or above the threshold (the exposure check reads the curated tree too)."""
    database = tmp_path / "copy.duckdb"
    database.write_bytes(private.db.read_bytes())

    def curate(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(CLI), "--db", str(database), "curate", *args, "-r", "private"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    tree = json.loads(
        subprocess.run(
            [str(CLI), "--db", str(database), "tree", DATASET, "-r", "private", "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout  # fmt: skip
    )
    finest = max(n["level"] for n in tree)
    first, second = [n["node_id"] for n in tree if n["level"] == finest and n["cluster_id"] >= 0][
        :2
    ]
    text_id = private.sql(
        "SELECT t.text_id FROM clustering.texts t JOIN clustering.assignments a "
        "USING (dataset, run_config, row_idx) WHERE t.dataset = ? AND t.run_config = ? "
        "AND a.level = ? AND a.cluster_id = ? LIMIT 1",
        [*private.where(), finest, int(first.split("/")[1])],
    )["text_id"][0]
    for args in (["split", DATASET, first, text_id, "--name", "x"],
                 ["move-texts", DATASET, text_id, "--to", second]):  # fmt: skip
        done = curate(*args)
        assert done.returncode == 1 and "is off under a privacy threshold" in done.stderr
    assert curate("rename", DATASET, first, "Payments").returncode == 0
    assert curate("merge", DATASET, first, second).returncode == 0
    with connect(database) as conn:
        privacy = PrivacyConfig(min_conversations=MIN_CONVERSATIONS, min_users=MIN_USERS)
        assert exposures(conn, Partition(*private.where()), privacy) == {
            "small_clusters": 0,
            "few_user_clusters": 0,
            "hidden_texts_shown": 0,
        }
        shown = conn.execute(
            "SELECT count(*) FROM clustering.curated_hierarchy WHERE dataset = ? AND name = ?",
            [DATASET, "Payments"],
        ).fetchone()[0]
    assert shown >= 1
