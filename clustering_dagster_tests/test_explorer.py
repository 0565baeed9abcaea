"""`clustering-dagster explore`, the local web app, run as a user runs it (a child process on a free
port of 127.0.0.1) over a real results file, and driven by headless Chromium over the DevTools
protocol: the partitions and their runs, the tree (expand, collapse, names), a cluster (its
path, children, texts page by page, neighbours, size over runs), search, the map (a click lands on
the point's cluster) and what changed since the previous run. Hostile texts from
`fixtures/hostile_texts.jsonl` are shown as text, never as markup; unknown names are 404 pages
with the CLI's line, a removed results file is 503, and nothing is loaded from the network."""

import html
import json
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
import yaml
from markupsafe import escape

from clustering_dagster.core.results.reading import read_only
from clustering_dagster.core.storage.store import Partition
from clustering_dagster.explorer.reads import SearchService

from .support.conversations import build_conversations, write_messages_jsonl
from .support.explored import ALIAS, CLI, LLM_CONFIG, _configs
from .support.hostile import HOSTILE, write_dataset
from .support.openai_server import OpenAICompatibleServer
from .support.workspace import Workspace, banking_slice

DATASET = "hostile"  # 6 Banking77 intents and the hostile texts, then 3 intents more
CHATS = "chats"  # conversations under `private`: facets, and a folded node


@dataclass(frozen=True)
class Results:
    workspace: Workspace

    @property
    def database(self) -> Path:
        return self.workspace.database

    def sql(self, query: str, params=None) -> pl.DataFrame:
        return self.workspace.sql(query, params)


def build_results(root: Path) -> Results:
    """`hostile|default` clustered twice (the second time with 60 more queries, so it has a
    change history), `hostile|llm_example` named by the test LLM server (alias `fake`) and
    `chats|private`: 300 conversations with facets, clusters of fewer than 20 folded."""
    workspace = Workspace(root)
    write_dataset(workspace.datasets)
    key = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = "sk-test"
    try:
        with OpenAICompatibleServer() as server:
            configs = yaml.safe_load(_configs(server.api_base))
            # clusters average 20 conversations: some always fall below 20 and fold, never all
            configs["private"]["privacy"]["min_conversations"] = 20
            # about 3 top nodes over the 9 intents' texts: the largest has two pages of texts
            upper = configs["default"]["upper_levels"]
            configs["default"]["upper_levels"] = upper | {"top_clusters": 3}
            workspace.write_configs(yaml.safe_dump(configs))
            assert workspace.materialize(DATASET).success
            path = workspace.datasets / f"{DATASET}.jsonl"
            first = set(banking_slice(6)["category"])
            more = banking_slice(9).filter(~pl.col("category").is_in(list(first)))
            grown = pl.concat([pl.read_ndjson(path), more.select("text", "category")])
            grown.write_ndjson(path)
            assert workspace.materialize(DATASET).success
            assert workspace.materialize(DATASET, LLM_CONFIG).success
            built = build_conversations(300, seed=5, pii_share=0.2)
            write_messages_jsonl(built.rows, workspace.datasets / f"{CHATS}.jsonl")
            assert workspace.materialize(CHATS, "private").success
    finally:
        if key is None:
            os.environ.pop("OPENAI_API_KEY")
        else:
            os.environ["OPENAI_API_KEY"] = key
    return Results(workspace)


# --- the explorer as a user starts it ----------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict  # names in lower case
    body: str

    def json(self):
        return json.loads(self.body)


@dataclass(frozen=True)
class Server:
    url: str  # http://127.0.0.1:PORT
    process: subprocess.Popen
    log: Path  # its stderr

    def get(self, path: str, headers: dict | None = None) -> Reply:
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=120) as reply:
                headers = {k.lower(): v for k, v in reply.headers.items()}
                return Reply(reply.status, headers, reply.read().decode())
        except urllib.error.HTTPError as err:
            headers = {k.lower(): v for k, v in err.headers.items()}
            return Reply(err.code, headers, err.read().decode())

    def json(self, path: str):
        reply = self.get(path)
        assert reply.status == 200, (path, reply.status, reply.body[:500])
        return reply.json()


def start_explorer(database: Path, log: Path, *args: str) -> Server:
    """`clustering-dagster --db DATABASE explore --port 0` in its own process."""
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [str(CLI), "--db", str(database), "explore", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=os.environ | {"HF_HUB_OFFLINE": "1"},
        )
    line = process.stdout.readline()
    found = re.search(r"http://127\.0\.0\.1:\d+", line)
    assert found, (line, log.read_text())
    return Server(found.group(0), process, log)


def stop(server: Server) -> None:
    server.process.terminate()
    server.process.wait(timeout=60)


def cli(database: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CLI), "--db", str(database), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"HF_HUB_OFFLINE": "1"},
    )


def cli_json(database: Path, *args: str):
    done = cli(database, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def exported(database: Path, *args: str) -> list[dict]:
    """`export DATASET --format json`: per cluster its id and items."""
    done = cli(database, "export", DATASET, "--format", "json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def cli_error(database: Path, *args: str) -> str:
    """The message of the one `error: ` line a failing command prints."""
    done = cli(database, *args)
    assert done.returncode == 1 and done.stderr.startswith("error: "), done
    return done.stderr.strip().removeprefix("error: ")


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Results:
    return build_results(tmp_path_factory.mktemp("explorer"))


@pytest.fixture(scope="module")
def server(results, tmp_path_factory):
    running = start_explorer(results.database, tmp_path_factory.mktemp("logs") / "explorer.log")
    yield running
    stop(running)
    assert "Traceback" not in running.log.read_text()


# --- driving the browser -------------------------------------------------------------------------


def settle(page, expression: str = "true", timeout: float = 90) -> None:
    """Wait until the page is loaded and `expression` holds, across a navigation."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if page.evaluate(f"document.readyState === 'complete' && !!({expression})"):
                return
        except RuntimeError:
            pass  # the page is being replaced
        if time.monotonic() > deadline:
            raise TimeoutError(f"still false after {timeout} s: {expression}")
        time.sleep(0.2)


def follow(page, selector: str, expression: str = "true") -> None:
    """Click `selector` and wait for the next page (where `expression` holds)."""
    page.evaluate("window.beforeClick = true")
    page.click(selector)
    settle(page, f"!window.beforeClick && ({expression})")


def address(page) -> str:
    return page.evaluate("location.pathname + location.search + location.hash")


def local_only(page, server: Server) -> None:
    """No console error (a blocked script or style counts), nothing requested elsewhere."""
    assert page.errors == []
    assert page.requests and all(url.startswith(server.url + "/") for url in page.requests), [
        url for url in page.requests if not url.startswith(server.url)
    ]


def node_url(dataset: str, run_config: str, node_id: str = "", **query) -> str:
    path = f"/p/{dataset}/{run_config}" + (f"/c/{node_id}" if node_id else "")
    return path + ("?" + urllib.parse.urlencode(query) if query else "")


# --- the pages, in a browser ---------------------------------------------------------------------


def test_the_partitions_page_lists_every_partition_and_its_runs(server, results, page):
    page.open(server.url + "/")
    rows = page.evaluate(
        "Array.from(document.querySelectorAll('#partitions tbody tr'))"
        ".map(r => Array.from(r.cells).map(c => c.textContent.trim()))"
    )
    listed = cli_json(results.database, "datasets")
    assert [row[:3] for row in rows] == [
        [p["dataset"], p["run_config"], f"{p['texts']:,}"] for p in listed
    ]
    assert {p["run_config"] for p in listed} == {"default", LLM_CONFIG, "private"}
    shown_runs = page.evaluate(
        "Array.from(document.querySelectorAll('#runs tbody tr code')).map(e => e.title)"
    )
    assert sorted(shown_runs) == sorted(
        run["dagster_run_id"] for run in cli_json(results.database, "runs")
    )
    assert len(shown_runs) == 4
    follow(
        page, f'#partitions a.open[href="/p/{DATASET}/default"]', "document.getElementById('tree')"
    )
    assert address(page) == f"/p/{DATASET}/default"
    local_only(page, server)


def test_the_tree_expands_and_collapses_and_keeps_what_is_open_in_its_address(
    server, results, page
):
    nodes = cli_json(results.database, "tree", DATASET, "-r", "default")
    tops = [n for n in nodes if n["level"] == 0]
    page.open(server.url + node_url(DATASET, "default"))
    settle(page, "document.getElementById('tree').dataset.ready === 'true'")
    assert page.texts("#tree > li > .row a.name") == [n["name"] for n in tops]
    assert page.texts("#tree > li > .row .size") == [f"{n['size']:,}" for n in tops]

    top = next(n for n in tops if n["n_children"] > 1)["node_id"]
    children = [n for n in nodes if n["parent_id"] == top]
    below = f'#tree li[data-node="{top}"] > ul.children > li'
    page.click(f'#tree li[data-node="{top}"] > .row > button.toggle')
    settle(page, f"document.querySelectorAll('{below}').length > 0")
    assert page.texts(f"{below} > .row a.name") == [n["name"] for n in children]
    assert page.texts(f"{below} > .row .id") == [n["node_id"] for n in children]
    opened = f"/p/{DATASET}/default#open={urllib.parse.quote(top, safe='')}"
    assert address(page) == opened

    page.open("about:blank")
    page.open(server.url + opened)  # a shared address opens the tree as it was
    settle(page, "document.getElementById('tree').dataset.ready === 'true'")
    assert page.texts(f"{below} > .row a.name") == [n["name"] for n in children]
    assert page.evaluate(f"document.querySelector('{below}').parentElement.hidden") is False
    page.click(f'#tree li[data-node="{top}"] > .row > button.toggle')
    settle(page, f"document.querySelector('{below}').parentElement.hidden")
    assert address(page) == f"/p/{DATASET}/default"

    follow(
        page,
        f'#tree li[data-node="{top}"] > .row a.name',
        "document.getElementById('cluster-name')",
    )
    assert address(page) == f"/p/{DATASET}/default/c/{top}"
    local_only(page, server)


def test_the_tree_switches_between_keyword_names_and_an_llm_alias(server, results, page):
    by_llm = cli_json(results.database, "tree", DATASET, "-r", LLM_CONFIG)
    keywords = cli_json(results.database, "tree", DATASET, "-r", LLM_CONFIG, "--alias", "keywords")
    page.open(server.url + node_url(DATASET, LLM_CONFIG))
    settle(page, "document.getElementById('tree').dataset.ready === 'true'")
    assert page.texts("#tree > li > .row a.name") == [n["name"] for n in by_llm if n["level"] == 0]
    assert page.texts(".names .choice") == ["keywords", ALIAS]
    assert page.texts(".names .current") == [ALIAS]
    summaries = page.texts("#tree > li > .summary")
    assert summaries == [n["summary"] for n in by_llm if n["level"] == 0]  # the LLM's summaries
    follow(page, ".names a.choice", "document.getElementById('tree').dataset.ready === 'true'")
    assert address(page) == node_url(DATASET, LLM_CONFIG, names="keywords")
    assert page.texts("#tree > li > .row a.name") == [
        n["name"] for n in keywords if n["level"] == 0
    ]
    assert page.texts(".names .current") == ["keywords"]
    local_only(page, server)


def test_a_cluster_shows_its_path_children_texts_page_by_page_and_neighbours(server, results, page):
    nodes = cli_json(results.database, "tree", DATASET, "-r", "default")
    top = max((n for n in nodes if n["level"] == 0), key=lambda n: n["size"])
    assert top["size"] > 50 and top["n_children"] > 1  # two pages of texts, children
    shown = cli_json(results.database, "show", DATASET, top["node_id"], "-n", "5")
    every = cli_json(results.database, "texts", DATASET, top["node_id"], "--limit", "0")
    assert len(every) == top["size"]

    page.open(server.url + node_url(DATASET, "default", top["node_id"]))
    settle(page, "document.getElementById('typical').dataset.ready === 'true'")
    assert page.texts("#cluster-name") == [top["name"]]
    assert page.texts("#cluster-size") == [f"{top['size']:,}"]
    assert page.texts("#children a.name") == [c["name"] for c in shown["children"]]
    assert page.texts("#typical .text") == [shown_text(t["text"]) for t in shown["typical_texts"]]
    assert page.texts("#keywords") == ["Keywords: " + ", ".join(top["keywords"])]
    first = page.texts("#texts .text")
    assert len(first) == 50
    neighbours = page.texts("#neighbours .id")
    assert neighbours and set(neighbours) < {n["node_id"] for n in nodes if n["level"] == 0}

    follow(page, "nav.pager a.next", "document.getElementById('texts')")
    assert address(page) == node_url(DATASET, "default", top["node_id"], page=2) + "#all-texts"
    second = page.texts("#texts .text")
    assert len(second) == min(50, top["size"] - 50)
    if top["size"] <= 100:  # every text, each once, on the two pages
        assert sorted(first + second) == sorted(shown_text(t["text"]) for t in every)

    child = shown["children"][0]
    follow(page, "#children a.name", "document.getElementById('cluster-name')")
    assert address(page) == node_url(DATASET, "default", child["node_id"])
    assert page.texts("nav.path a") == ["top", top["name"]]
    follow(page, "nav.path a[data-node]", "document.getElementById('cluster-name')")
    assert address(page) == node_url(DATASET, "default", top["node_id"])
    local_only(page, server)


def shown_text(text: str) -> str:
    """A text as the pages show it: control characters and bidi overrides as escapes."""
    from clustering_dagster.explorer.render import shown

    return shown(text)


def cluster_holding(database: Path, fragment: str, run_config: str = "default") -> str:
    """The finest-level node id of the text holding `fragment`."""
    for cluster in exported(database, "-r", run_config):
        if any(fragment in item["content"] for item in cluster["items"]):
            return cluster["id"]
    raise AssertionError(fragment)


def test_hostile_texts_are_shown_as_text_never_as_markup(server, results, page):
    hostile = pl.read_ndjson(HOSTILE)["text"].to_list()
    html_texts = [t for t in hostile if "<" in t]
    controls = [t for t in hostile if "\x1b" in t or "\u202e" in t or "\x9b" in t]
    assert len(html_texts) >= 4 and len(controls) >= 4
    for text in html_texts + controls:
        node = cluster_holding(results.database, text)
        url = node_url(DATASET, "default", node)
        raw = server.get(url).body
        assert text not in raw  # escaped in the HTML itself
        page.open(server.url + url)
        settle(page, "document.getElementById('texts')")
        pages = [page.texts("#texts .text")]
        while page.evaluate("!!document.querySelector('nav.pager a.next')"):
            follow(page, "nav.pager a.next", "document.getElementById('texts')")
            pages.append(page.texts("#texts .text"))
        shown = [t for texts in pages for t in texts]
        assert shown_text(text) in shown, text
        # no element or script came from the data: only the explorer's own files run
        assert (
            page.evaluate("document.querySelectorAll('img, iframe, b, script:not([src])').length")
            == 0
        )
        sources = page.evaluate("Array.from(document.scripts).map(s => new URL(s.src).pathname)")
        assert set(sources) <= {"/static/common.js", "/static/cluster.js"}
    cleared = next(t for t in controls if "[2J" in t)
    assert "\\x1b[2J\\x1b[H the screen was cleared" in shown_text(cleared)
    bidi = next(t for t in controls if "\u202e" in t)
    assert "\\u202e" in shown_text(bidi)
    # the same texts found by search, and in its JSON exactly
    page.open(
        server.url
        + node_url(DATASET, "default")
        + "/search?q="
        + urllib.parse.quote("script alert how do I top up my account")
    )
    settle(page, "document.getElementById('text-hits')")
    assert shown_text(html_texts[0]) in page.texts("#text-hits .text")
    assert page.evaluate("document.querySelectorAll('img, script:not([src])').length") == 0
    found = server.json(
        node_url(DATASET, "default") + "/api/search?q=" + urllib.parse.quote("script alert top up")
    )
    assert html_texts[0] in [hit["text"] for hit in found["texts"]]
    local_only(page, server)


def test_search_ranks_texts_and_clusters_as_the_cli_does_and_within_a_cluster(
    server, results, page
):
    query = "my card payment was declined"
    cli_hits = cli_json(
        results.database, "search", query, "-d", DATASET, "-r", "default", "-n", "20"
    )
    page.open(server.url + node_url(DATASET, "default"))
    settle(page, "document.getElementById('tree')")
    page.evaluate(
        f"document.querySelector('header form.search input[name=q]').value = {json.dumps(query)}"
    )
    follow(page, "header form.search button", "document.getElementById('text-hits')")
    assert address(page) == node_url(DATASET, "default") + "/search?q=" + urllib.parse.quote_plus(
        query
    )
    shown = page.texts("#text-hits .text")
    assert shown[:5] == [shown_text(hit["text"]) for hit in cli_hits["texts"][:5]]
    assert page.texts("#cluster-hits .id")[:5] == [
        hit["node_id"] for hit in cli_hits["clusters"][:5]
    ]
    # inside one cluster
    node = cli_hits["clusters"][0]["node_id"]
    within = cli_json(
        results.database,
        "search",
        query,
        "-d",
        DATASET,
        "-r",
        "default",
        "--within",
        node,
        "--texts",
    )
    page.open(
        server.url
        + node_url(DATASET, "default")
        + "/search?"
        + urllib.parse.urlencode({"q": query, "within": node})
    )
    settle(page, "document.getElementById('text-hits')")
    assert page.texts("#within .id") == [node]
    assert page.texts("#text-hits .text")[:5] == [
        shown_text(hit["text"]) for hit in within["texts"][:5]
    ]
    name = next(
        n["name"] for n in cli_json(results.database, "tree", DATASET) if n["node_id"] == node
    )
    assert all(name in path.split(" › ") for path in page.texts("#text-hits .hit-path"))
    follow(page, "#cluster-hits a.name", "document.getElementById('cluster-name')")
    assert "/c/" in address(page)
    local_only(page, server)


MAP_READY = "document.getElementById('map').dataset.ready === 'true'"
LABEL_BOXES = """Array.from(document.querySelectorAll('#map g.annotation')).map(g => {
  const r = g.querySelector('rect.bg').getBoundingClientRect();
  return [r.left, r.top, r.right, r.bottom, g.textContent];
})"""
# per point: its position in the viewport, its cluster, and whether a click there reaches the plot
# (not a name, the legend or the mode bar above it)
POINTS = """(() => {
  const d = document.getElementById('map'), L = d._fullLayout, r = d.getBoundingClientRect();
  return d.data.flatMap(t => t.x.map((x, i) => {
    const px = r.left + L._size.l + L.xaxis.l2p(x), py = r.top + L._size.t + L.yaxis.l2p(t.y[i]);
    const top = document.elementFromPoint(px, py);
    return [px, py, t.customdata[i], !!top && top.classList.contains('nsewdrag')];
  }));
})()"""


def test_the_map_places_names_without_overlap_and_a_click_opens_a_cluster(server, results, page):
    texts = results.sql(
        "SELECT count(*) AS n FROM clustering.texts WHERE dataset = ? AND run_config = 'default'",
        [DATASET],
    )["n"][0]
    page.open(server.url + node_url(DATASET, "default") + "/map")
    settle(page, MAP_READY, timeout=180)
    points = page.evaluate(POINTS)
    assert len(points) == texts
    boxes = page.evaluate(LABEL_BOXES)
    names = {n["name"] for n in cli_json(results.database, "tree", DATASET)}
    assert boxes and {box[4] for box in boxes} <= names
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert (
                a[2] <= b[0] + 0.5 or b[2] <= a[0] + 0.5 or a[3] <= b[1] + 0.5 or b[3] <= a[1] + 0.5
            ), (a, b)

    def under_a_label(x, y):
        return any(b[0] - 4 <= x <= b[2] + 4 and b[1] - 4 <= y <= b[3] + 4 for b in boxes)

    x, y, _, _ = next(p for p in points if p[3] and not under_a_label(p[0], p[1]))
    near = {p[2] for p in points if abs(p[0] - x) < 8 and abs(p[1] - y) < 8}
    page.evaluate("window.beforeClick = true")
    page.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
    time.sleep(0.5)  # plotly picks the point under the pointer on hover
    page.mouse_click(x, y)
    settle(page, "!window.beforeClick && document.getElementById('cluster-name')")
    landed = address(page).split("/c/", 1)[1]
    assert landed in near
    page.evaluate("history.back()")
    settle(page, MAP_READY, timeout=180)
    local_only(page, server)


def test_the_changes_page_lists_what_changed_and_leads_to_each_cluster(server, results, page):
    report = cli_json(results.database, "changes", DATASET)
    assert report and report[0]["previous_run_id"]  # the second clustering, against the first
    page.open(server.url + node_url(DATASET, "default") + "/changes")
    settle(page, "document.getElementById('changes')")
    rows = page.evaluate(
        "Array.from(document.querySelectorAll('#changes tbody tr'))"
        ".map(r => [r.cells[0].textContent.trim(), r.querySelector('.event').textContent])"
    )
    assert rows == [[row["node_id"], row["event"]] for row in report]
    linked = next(row for row in report if row["event"] != "vanished")
    follow(page, f'#changes a.change-link[href$="/c/{linked["node_id"]}"]',
           "document.getElementById('cluster-name')")  # fmt: skip
    assert address(page) == node_url(DATASET, "default", linked["node_id"])
    assert page.texts("#lineage .event") == [linked["event"]]
    history = results.sql(
        "SELECT size FROM clustering.cluster_changes WHERE dataset = ? AND run_config = 'default' "
        "AND level_name = ? AND cluster_id = ? ORDER BY recorded_at",
        [DATASET, linked["level_name"], linked["cluster_id"]],
    )["size"].to_list()
    assert page.evaluate("document.querySelectorAll('#size-chart circle').length") == len(history)
    assert page.texts("#history td.num:nth-child(4)") == [f"{n:,}" for n in history]
    # the counts table filters the rows
    page.open(server.url + node_url(DATASET, "default") + "/changes?level=fine&event=kept")
    settle(page, "document.getElementById('counts')")
    kept = [r["node_id"] for r in report if r["level_name"] == "fine" and r["event"] == "kept"]
    assert page.texts("#changes tbody tr td:first-child") == kept
    local_only(page, server)


def test_the_folded_node_shows_its_count_only_and_conversations_their_facets(server, results, page):
    nodes = cli_json(results.database, "tree", CHATS, "-r", "private")
    folded = next(n for n in nodes if n["cluster_id"] == -2 and n["level"] == 0)
    page.open(server.url + node_url(CHATS, "private"))
    settle(page, "document.getElementById('tree').dataset.ready === 'true'")
    row = f'#tree > li[data-node="{folded["node_id"]}"]'
    assert page.texts(f"{row} .size") == [f"{folded['size']:,}"]
    assert page.texts(f"{row} > .summary") == [
        f"{folded['size']:,} texts below the privacy threshold: only their count is shown."
    ]
    follow(page, f"{row} a.name", "document.getElementById('cluster-name')")
    assert page.texts("#folded") == [
        f"{folded['size']:,} texts below the privacy threshold: only their count is shown."
    ]
    for section in ("texts", "typical", "neighbours", "facets", "size-chart"):
        assert page.evaluate(f"document.getElementById('{section}')") is None, section
    shown = server.json(node_url(CHATS, "private") + f"/api/cluster/{folded['node_id']}")
    assert shown["texts"] is None and shown["typical"] == [] and shown["neighbours"] == []
    hidden = results.sql(
        "SELECT t.text FROM clustering_store.texts t JOIN clustering.published p "
        "ON p.table_name = 'texts' AND p.dataset = t.dataset AND p.run_config = t.run_config "
        "AND p.version = t.version WHERE t.dataset = ? AND t.run_config = 'private' AND t.row_idx "
        "NOT IN (SELECT row_idx FROM clustering.texts WHERE dataset = ? AND run_config = 'private')",
        [CHATS, CHATS],
    )["text"].to_list()
    assert hidden
    body = page.evaluate("document.body.textContent")
    assert not any(text in body for text in hidden)
    # a visible cluster of conversations: its facets, as `show` gives them
    other = next(n for n in nodes if n["level"] == 0 and n["cluster_id"] != -2)
    facets = cli_json(results.database, "show", CHATS, other["node_id"], "-r", "private")["facets"]
    page.open(server.url + node_url(CHATS, "private", other["node_id"]))
    settle(page, "document.getElementById('facets')")
    assert page.texts("#facets tr:first-child td") == [f"{facets['conversations']:,}"]
    languages = page.texts("#facets .facet")
    assert languages == [
        f"{lang} {100 * share:.1f}%" for lang, share in facets["languages"].items()
    ]
    local_only(page, server)


# --- plain HTTP ----------------------------------------------------------------------------------


def test_unknown_names_are_404_with_the_line_the_cli_prints(server, results):
    db = results.database
    cases = {
        node_url("nosuch", "default"): cli_error(db, "tree", "nosuch"),
        node_url(DATASET, "nosuch"): cli_error(db, "tree", DATASET, "-r", "nosuch"),
        node_url(DATASET, "default", "fine/999"): cli_error(db, "show", DATASET, "fine/999"),
        node_url(DATASET, "default", names="nosuch"): cli_error(
            db, "tree", DATASET, "--alias", "nosuch"
        ),
    }
    for path, line in cases.items():
        reply = server.get(path)
        assert reply.status == 404, path
        assert reply.headers["content-type"].startswith("text/html")
        assert f'<p class="error" id="error">error: {escape(line)}</p>' in reply.body, (
            path,
            line,
        )
        assert "Traceback" not in reply.body
    api = server.get(node_url("nosuch", "default") + "/api/children")
    assert api.status == 404 and api.json() == {
        "error": cases[node_url("nosuch", "default")],
        "status": 404,
    }
    within = server.get(node_url(DATASET, "default") + "/search?q=card&within=fine/999")
    assert within.status == 404 and "no cluster &#39;fine/999&#39;" in within.body
    missing = server.get("/no/such/page")
    assert missing.status == 404 and "error: no page at /no/such/page" in missing.body
    assert server.get(node_url(DATASET, "default", "fine/0", page="x")).status == 400
    assert server.get("/", headers={"Host": "evil.example"}).status == 400  # no DNS rebinding


def test_the_json_endpoints_answer_what_the_pages_show(server, results):
    db = results.database
    listed = server.json("/api/partitions")
    assert [(p["dataset"], p["run_config"], p["texts"]) for p in listed["partitions"]] == [
        (p["dataset"], p["run_config"], p["texts"]) for p in cli_json(db, "datasets")
    ]
    assert {r["dagster_run_id"] for r in listed["runs"]} == {
        r["dagster_run_id"] for r in cli_json(db, "runs")
    }
    nodes = cli_json(db, "tree", DATASET, "-r", "default")
    tops = server.json(node_url(DATASET, "default") + "/api/children")["children"]
    assert [(n["node_id"], n["name"], n["size"]) for n in tops] == [
        (n["node_id"], n["name"], n["size"]) for n in nodes if n["level"] == 0
    ]
    top = max(tops, key=lambda n: n["size"])
    below = server.json(node_url(DATASET, "default") + "/api/children?node=" + top["node_id"])
    assert [n["node_id"] for n in below["children"]] == [
        n["node_id"] for n in nodes if n["parent_id"] == top["node_id"]
    ]
    every = cli_json(db, "texts", DATASET, top["node_id"], "--limit", "0")
    pages = [
        server.json(node_url(DATASET, "default") + f"/api/cluster/{top['node_id']}?page={n}")
        for n in (1, 2, 99)
    ]
    assert pages[0]["texts"]["total"] == top["size"] == len(every)
    assert pages[2]["texts"]["page"] == pages[2]["texts"]["pages"]  # past the end: the last page
    rows = pages[0]["texts"]["rows"] + pages[1]["texts"]["rows"]
    assert [r["row_idx"] for r in rows] == sorted(r["row_idx"] for r in every)[: len(rows)]
    shown = cli_json(db, "show", DATASET, top["node_id"], "-n", "5")
    assert [t["text"] for t in pages[0]["typical"]] == [t["text"] for t in shown["typical_texts"]]
    assert pages[0]["path"] == [] and [c["node_id"] for c in pages[0]["children"]] == [
        c["node_id"] for c in shown["children"]
    ]
    found = server.json(node_url(DATASET, "default") + "/api/search?q=lost+card")
    assert found["texts"] and found["clusters"] and found["names"] == "keywords"
    drawn = server.json(node_url(DATASET, "default") + "/api/map")
    points = sum(len(t["x"]) for t in drawn["traces"])
    assert points == drawn["total"] == sum(len(cluster["items"]) for cluster in exported(db))
    report = server.json(node_url(DATASET, "default") + "/api/changes")
    assert [r["node_id"] for r in report["changes"]] == [
        r["node_id"] for r in cli_json(db, "changes", DATASET)
    ]


def test_it_is_offline_and_guarded(server):
    from plotly.offline import get_plotlyjs

    reply = server.get("/vendor/plotly.min.js")
    assert reply.status == 200 and reply.body == get_plotlyjs()
    for path in ("/", node_url(DATASET, "default"), node_url(DATASET, "default") + "/map"):
        reply = server.get(path)
        assert reply.status == 200
        policy = reply.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "default-src 'self'" in policy
        assert reply.headers["x-content-type-options"] == "nosniff"
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", reply.body)
        assert "<script>" not in reply.body  # no inline script: the policy would refuse it


def test_a_removed_results_file_is_503_and_a_fresh_process_finds_typical_texts(results, tmp_path):
    copy = tmp_path / "copy.duckdb"
    copy.write_bytes(results.database.read_bytes())
    running = start_explorer(copy, tmp_path / "explorer.log")
    try:
        top = cli_json(copy, "tree", DATASET, "-r", "default")[0]["node_id"]
        page = running.get(node_url(DATASET, "default", top))
        assert page.status == 200
        lazy = re.search(r'id="typical" data-api="([^"]+)"', page.body)  # the index is not read
        assert lazy, "the first cluster page of a process asks for its typical texts"
        typical = running.json(html.unescape(lazy.group(1)))["typical"]
        shown = cli_json(copy, "show", DATASET, top, "-n", "5")["typical_texts"]
        assert [t["text"] for t in typical] == [t["text"] for t in shown]
        copy.unlink()
        for path in ("/", node_url(DATASET, "default"), node_url(DATASET, "default", top)):
            gone = running.get(path)
            assert gone.status == 503, path
            assert f"error: no results database at {copy}" in gone.body
        api = running.get("/api/partitions")
        assert api.status == 503 and api.json()["error"].startswith("no results database at")
    finally:
        stop(running)
    assert "Traceback" not in (tmp_path / "explorer.log").read_text()


def test_a_port_in_use_is_one_line(results):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = cli(results.database, "explore", "--port", str(port))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: port {port} on 127.0.0.1 is in use: pass --port with another (0: any free one)"
    ]


def test_pages_are_drawn_quickly(server, results):
    """Times of the pages on this small partition (a benchmark measures 100,000 texts)."""
    nodes = cli_json(results.database, "tree", DATASET, "-r", "default")
    top = max((n for n in nodes if n["level"] == 0), key=lambda n: n["size"])
    paths = {
        "partitions": "/",
        "tree": node_url(DATASET, "default"),
        "cluster": node_url(DATASET, "default", top["node_id"]),
        "cluster page 2": node_url(DATASET, "default", top["node_id"], page=2),
        "search": node_url(DATASET, "default") + "/search?q=where+is+my+new+card",
        "changes": node_url(DATASET, "default") + "/changes",
    }
    server.get(paths["search"])  # the model and the index are read once per process
    seconds = {}
    for name, path in paths.items():
        started = time.perf_counter()
        assert server.get(path).status == 200
        seconds[name] = round(time.perf_counter() - started, 3)
    print("explorer page seconds:", seconds)
    assert max(seconds.values()) < 5  # generous: the machine is shared


def test_the_query_model_is_loaded_before_the_first_page_and_an_index_used_only_when_scanned(
    results,
):
    """Start-up loads the file's one query model (so no page waits for torch); a page uses the
    search index only once it was read and scanned, and while it is current."""
    service = SearchService(results.database)
    assert service.load_models() == ["sentence-transformers:sentence-transformers/all-MiniLM-L6-v2"]
    part = Partition(DATASET, "default")
    with read_only(results.database) as conn:
        assert not service.ready(conn, part, "keywords")
    service.warm(part, "keywords")
    deadline = time.monotonic() + 60
    while True:
        with read_only(results.database) as conn:
            if service.ready(conn, part, "keywords"):
                break
        assert time.monotonic() < deadline, "the index was not read in the background"
        time.sleep(0.1)
    assert SearchService(results.database.parent / "missing.duckdb").load_models() == []
