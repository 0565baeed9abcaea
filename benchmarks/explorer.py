"""The explorer (`clustering-dagster explore`) on 100,000 texts, as a user meets it in a browser,
and the change report of a new topic seen through it.

The partition: `benchmarks.scale`'s dataset of 100,000 texts (`b77_100000.parquet` in
`benchmarks/out/scale_datasets/`, built once by its builder: all 13,083 Banking77 queries and
noisy copies of them, each a real query's MiniLM vector plus Gaussian noise, sigma 0.02 per
dimension, renormalised, its text the real one with ` #<n>` appended), given to the pipeline as a
plain text dataset (id, text, category) with those vectors put in the results file's vector store
first, so that the `embeddings` asset finds them cached and search embeds queries with the same
model. It is clustered by the real pipeline (`raw_texts` through `cluster_hierarchy`, the shipped
`default` run configuration) into a fresh `benchmarks/out/explorer.duckdb`.

Then `clustering-dagster --db FILE explore --port P` is started as a user starts it, in its own
process, and headless Chromium (the tests' DevTools driver) opens its pages. Every time is from
the navigation's start to the frame that draws the content, measured in the page: a script
injected before every document watches the DOM and records `performance.now()` (0 = the start of
the navigation) in the animation frame after the element appears; the wall clock around the
DevTools navigate-and-wait is printed beside it. The elements: the tree's first node
(`tree_ms`), a cluster page's first text row, for the largest top cluster, its page 2 of texts
and the largest fine cluster (`cluster_ms`: the worst of the three), the first text hit of a
search (`search_ms`: the median of the searches, run after the tree page was opened, which reads
the search index in the background (the server loaded the query model before it answered), and
after the cluster pages, with
no pause; the first of them is `first_search_ms`), the map drawn (`map_ms`) and the changes
table's first row (`changes_ms`). `cold_search_ms` is a search opened first thing in a fresh
server process: it reads the index itself.

Pages driven and checked (`pages_checked`, each against the CLI's `--json`, with no console
error and nothing requested from elsewhere): the partitions page, the tree with its largest node
expanded (its children as `tree` lists them; `expand_ms`), the largest top cluster (size, 50
texts, its typical texts) and its page 2 (the next 50, by clicking the pager), the largest fine
cluster, a search (hits as `search` ranks them), the map (every point drawn, a click on a point
opens one of the clusters under the pointer) and the changes page.

The changes: 10% more texts on a topic the partition lacks (HWU64's 502 alarm queries, embedded
once into `benchmarks/out/explorer_topic.duckdb`, and noisy copies of them with the same noise,
ids `new:<n>`) are appended to the dataset and the partition is re-clustered by the real
pipeline. The changes page must list what `clustering-dagster changes --json` does (every row,
its event and its emerging flag) and lead from the first emerging row to its cluster page, which
says emerging. `emerging_found`: a cluster flagged emerging holds mostly (> 50%) planted texts;
also printed: each emerging cluster's share of planted texts, `false_emerging` (emerging clusters
mostly of old texts) and `planted_in_emerging` (the share of the planted texts inside emerging,
mostly planted clusters, the best level).

Screenshots (1200x800, the full run only) of the tree, a cluster, a search, the map and the
changes are written to docs/images/explorer_*.png. The last line is one JSON object: tree_ms,
cluster_ms, search_ms, cold_search_ms, emerging_found, pages_checked, texts, seconds and the other
figures. Bars (issue): tree_ms, cluster_ms <= 1000, search_ms <= 1500, emerging_found true,
pages_checked >= 5; printed met / unmet.

Usage, from the repository root: python -m benchmarks.explorer [--smoke]
(--smoke: in a temporary folder, 300 Banking77 queries embedded and grown to 500 texts, 25 alarm
queries grown to 50 planted texts, three searches, no screenshots; about a minute)
"""

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks import scale as grown
from benchmarks.common import (
    OUT,
    REPO,
    cluster_tree,
    machine,
    materialise,
    tree_assets,
    write_texts,
)
from benchmarks.search import QUERIES
from clustering_dagster_tests.support.chromium import Browser, chromium

CLI = Path(sys.executable).parent / "clustering-dagster"
IMAGES = REPO / "docs" / "images"
RUN_CONFIG = "default"
PLANTED_SHARE = 0.10  # new texts appended, of the partition's texts
SEARCH_HITS = 20  # the search page's text hits
PER_PAGE = 50  # texts on a cluster page
VIEWPORT = (1200, 800)
BARS = {  # figure -> (what must hold, as printed)
    "tree_ms": (lambda v: v <= 1000, "<= 1000"),
    "cluster_ms": (lambda v: v <= 1000, "<= 1000"),
    "search_ms": (lambda v: v <= 1500, "<= 1500"),
    "emerging_found": (lambda v: v is True, "true"),
    "pages_checked": (lambda v: v >= 5, ">= 5"),
}


@dataclass(frozen=True)
class Size:
    texts: int  # of the partition measured
    real: int | None  # Banking77 queries embedded (None: all 13,083)
    topic: int | None  # HWU64 alarm queries embedded (None: all 502)
    searches: int
    screenshots: bool


FULL = Size(100_000, None, None, 5, True)
SMOKE = Size(500, 300, 25, 3, False)

# what the injected script watches: name -> the element whose appearance means "drawn"
DRAWN = {
    "partitions": "#partitions tbody tr",
    "tree": "#tree > li",
    "expanded": "#tree > li > ul.children > li",
    "cluster": "#texts > li",
    "typical": '#typical[data-ready="true"] > li',
    "search": "#text-hits > li",
    "map": '#map[data-ready="true"]',
    "changes": "#changes tbody tr",
    "cluster_name": "#cluster-name",
}
WATCH = """(() => {
  const wanted = WANTED, drawn = {};
  window.__drawn = drawn;
  const check = () => {
    for (const [name, selector] of Object.entries(wanted)) {
      if (drawn[name] || !document.querySelector(selector)) continue;
      drawn[name] = {found: performance.now()};
      requestAnimationFrame(() => { drawn[name].frame = performance.now(); });
    }
  };
  new MutationObserver(check).observe(document, {
    childList: true, subtree: true, attributes: true, attributeFilter: ["data-ready"]});
})();""".replace("WANTED", json.dumps(DRAWN))
# where a page's time went, from the navigation's start: the server's answer began (`server_ms`,
# from the request's start) and ended, and the document was parsed with its scripts run
NAVIGATION = """(() => {
  const n = performance.getEntriesByType('navigation')[0];
  return {server_ms: n.responseStart - n.requestStart, response_ms: n.responseEnd,
          parsed_ms: n.domContentLoadedEventEnd};
})()"""
# a point of the map a click reaches (the plot, not a name, the legend or the mode bar), on and
# around it, and the finest clusters of every point within 8 pixels of it
MAP_TARGET = """(() => {
  const d = document.getElementById('map'), L = d._fullLayout, r = d.getBoundingClientRect();
  const pts = d.data.flatMap(t => t.x.map((x, i) => [
    r.left + L._size.l + L.xaxis.l2p(x), r.top + L._size.t + L.yaxis.l2p(t.y[i]), t.customdata[i]]));
  const free = (x, y) => [[0, 0], [6, 0], [-6, 0], [0, 6], [0, -6]].every(([dx, dy]) => {
    const e = document.elementFromPoint(x + dx, y + dy);
    return !!e && e.classList.contains('nsewdrag');
  });
  const step = Math.max(1, Math.floor(pts.length / 2000));
  for (let i = 0; i < pts.length; i += step) {
    const [x, y] = pts[i];
    if (!free(x, y)) continue;
    const near = pts.filter(p => Math.abs(p[0] - x) < 8 && Math.abs(p[1] - y) < 8).map(p => p[2]);
    return {x: x, y: y, near: Array.from(new Set(near)), points: pts.length};
  }
  return {points: pts.length};
})()"""


# --- the data --------------------------------------------------------------------------------


def base_texts(work: Path, size: Size) -> tuple[pl.DataFrame, np.ndarray]:
    """`benchmarks.scale`'s dataset of `size.texts` texts (built by its builder unless there):
    (id, text, category) and the vectors."""
    import pyarrow.parquet as pq

    folder = work / grown.DATASETS
    folder.mkdir(parents=True, exist_ok=True)
    name = f"b77_{size.texts}"
    path = folder / f"{name}.parquet"
    if not path.exists():
        texts, vectors = grown.banking77(work, size.real)
        grown.write_dataset(folder, name, size.texts, texts, vectors)
    table = pq.read_table(path)
    column = table.column("embedding").combine_chunks()
    vectors = column.flatten().to_numpy().reshape(len(table), -1).astype(np.float32)
    return pl.from_arrow(table.select(["id", "text", "category"])), vectors


def topic_texts(work: Path, n: int | None) -> tuple[pl.DataFrame, np.ndarray]:
    """HWU64's alarm queries (`n` of them at random; None: all), embedded by the pipeline once
    into `work`/explorer_topic.duckdb: (text, category) and their vectors."""
    from clustering_dagster.core.storage.store import Partition, connect, partition_vectors

    folder = work / "explorer_topic_datasets"
    folder.mkdir(parents=True, exist_ok=True)
    alarms = pl.read_csv(REPO / "data" / "hwu64" / "hwu64.csv").filter(
        pl.col("scenario") == "alarm"
    )
    if n is not None:
        alarms = alarms.sample(n, seed=0)
    alarms.select("text", category="intent").write_csv(folder / "alarms.csv")
    (folder / "alarms.yaml").write_text("label_column: category\n")
    database = work / "explorer_topic.duckdb"
    materialise(
        database, folder, "alarms", RUN_CONFIG, assets=tree_assets(["raw_texts", "embeddings"])
    )
    with connect(database) as conn:
        rows, vectors = partition_vectors(conn, Partition("alarms", RUN_CONFIG))
        truth = conn.execute(
            "SELECT ground_truth FROM clustering.texts WHERE dataset = 'alarms' "
            "AND run_config = ? ORDER BY row_idx",
            [RUN_CONFIG],
        ).pl()
    return rows.select("text", category=truth["ground_truth"]), vectors


def planted(
    texts: pl.DataFrame, vectors: np.ndarray, n: int, first: int
) -> tuple[pl.DataFrame, np.ndarray]:
    """`n` texts of the topic: its real ones, then noisy copies (the scale builder's noise), their
    text with ` #<row>` appended, ids `new:<row>` from row `first` on."""
    rng = np.random.default_rng(first)
    source = np.arange(min(n, len(texts)))
    source = np.concatenate([source, rng.integers(0, len(texts), n - len(source))])
    block = vectors[source].copy()
    copies = np.arange(len(texts), n) if n > len(texts) else np.arange(0)
    block[copies] += rng.normal(0, grown.NOISE, (len(copies), block.shape[1])).astype(np.float32)
    block[copies] /= np.linalg.norm(block[copies], axis=1, keepdims=True)
    rows = np.arange(first, first + n)
    suffix = pl.Series(np.where(np.arange(n) < len(texts), "", [f" #{r}" for r in rows]))
    frame = pl.DataFrame(
        {
            "id": [f"new:{r}" for r in rows],
            "text": texts["text"].gather(source) + suffix,
            "category": texts["category"].gather(source),
        }
    )
    return frame, block


def store_vectors(database: Path, texts: pl.DataFrame, vectors: np.ndarray) -> None:
    """The texts' vectors into the results file's store, as the default embedding model's: the
    `embeddings` asset then finds them cached."""
    from clustering_dagster.core.config.run_config import EmbeddingConfig
    from clustering_dagster.core.data_in.ingest import text_hash
    from clustering_dagster.core.embedding.embed import cache_key, normalise_rows
    from clustering_dagster.core.storage.store import connect, ensure_schema, put_vectors

    hashes = text_hash(texts["text"])
    first = hashes.is_first_distinct().to_numpy()  # a text repeated is stored once
    with connect(database) as conn:
        ensure_schema(conn)
        put_vectors(
            conn, cache_key(EmbeddingConfig()), hashes.filter(first), normalise_rows(vectors[first])
        )


# --- the explorer and the CLI ------------------------------------------------------------------


def cli_json(database: Path, *args: str):
    done = subprocess.run(
        [str(CLI), "--db", str(database), *args, "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ | {"HF_HUB_OFFLINE": "1"},
    )
    if done.returncode:
        raise RuntimeError(f"clustering-dagster {' '.join(args)}: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Explorer:
    """`clustering-dagster --db DATABASE explore --port P` in its own process, as a user runs it."""

    def __init__(self, database: Path, log: Path):
        port = free_port()
        self.log = log
        began = time.perf_counter()
        with log.open("w") as stderr:
            self.process = subprocess.Popen(
                [str(CLI), "--db", str(database), "explore", "--port", str(port)],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=os.environ | {"HF_HUB_OFFLINE": "1"},
            )
        line = self.process.stdout.readline()
        if f"127.0.0.1:{port}" not in line:
            self.stop()
            raise RuntimeError(f"the explorer did not start: {line!r} {log.read_text()[-2000:]}")
        self.startup_s = time.perf_counter() - began
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)

    def tracebacks(self) -> bool:
        return "Traceback" in self.log.read_text()


# --- the browser ---------------------------------------------------------------------------------


def prepare(page) -> None:
    page.open("about:blank")  # enables the domains
    page.call("Page.addScriptToEvaluateOnNewDocument", source=WATCH)
    width, height = VIEWPORT
    page.call(
        "Emulation.setDeviceMetricsOverride",
        width=width,
        height=height,
        deviceScaleFactor=1,
        mobile=False,
    )


def _try(page, expression: str):
    try:
        return page.evaluate(expression)
    except (RuntimeError, TimeoutError):
        return None  # the page is being replaced


def settle(page, expression: str = "true", timeout: float = 120) -> None:
    """Wait until the page is loaded and `expression` holds."""
    deadline = time.monotonic() + timeout
    while not _try(page, f"document.readyState === 'complete' && !!({expression})"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"still false after {timeout} s: {expression}")
        time.sleep(0.05)


def _drawn(page, what: str, began: float, timeout: float) -> dict:
    """The page's record of `what` drawn once it has its frame (or, should no frame come within
    3 s of the element, the moment it appeared)."""
    probe = (
        "(() => { if (window.__leaving || !window.__drawn) return null; "
        f"return window.__drawn[{json.dumps(what)}] || null; }})()"
    )
    seen = None
    while True:
        got = _try(page, probe)
        now = time.perf_counter()
        if got and "frame" in got:
            return {"ms": got["frame"], "wall_ms": 1000 * (now - began)}
        if got and seen is None:
            seen = now
        if seen is not None and now - seen > 3:
            return {"ms": got["found"], "wall_ms": 1000 * (now - began), "no_frame": True}
        if now - began > timeout:
            raise TimeoutError(f"{what} not drawn after {timeout} s")
        time.sleep(0.02)


def visit(page, go: Callable[[], None], what: str, timeout: float = 300) -> dict:
    """Navigate (`go`: Page.navigate, or a click on a link) and wait until `what` is drawn: its
    time from the navigation's start in the page (`ms`) and the wall clock around it."""
    page.evaluate("window.__leaving = true")
    began = time.perf_counter()
    go()
    timing = _drawn(page, what, began, timeout)
    settle(page)
    return timing | page.evaluate(NAVIGATION)


def navigate(page, url: str) -> Callable[[], None]:
    return lambda: page.call("Page.navigate", url=url)


def interact(page, action: Callable[[], None], what: str, timeout: float = 120) -> dict:
    """Act on the page (no navigation) and wait until `what` is drawn: the time from just
    before the action, in the page."""
    page.evaluate("window.__t0 = performance.now()")
    began = time.perf_counter()
    action()
    timing = _drawn(page, what, began, timeout)
    return {**timing, "ms": timing["ms"] - page.evaluate("window.__t0")}


def address(page) -> str:
    return page.evaluate("location.pathname + location.search")


def shot(page, name: str, enabled: bool) -> None:
    """A screenshot of the viewport to docs/images/explorer_NAME.png, as a 256-colour PNG."""
    if not enabled:
        return
    from PIL import Image

    IMAGES.mkdir(parents=True, exist_ok=True)
    path = IMAGES / f"explorer_{name}.png"
    raw = path.with_suffix(".raw.png")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(raw)
    with Image.open(raw) as image:
        image.convert("RGB").quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)
    raw.unlink()


def shown(text: str) -> str:
    from clustering_dagster.explorer.render import shown as as_shown

    return as_shown(text)


class Checks:
    """Pages driven and checked: `with checks(name, page, server):` passes when its block
    raises nothing, the page logged no error and requested nothing from elsewhere."""

    def __init__(self):
        self.passed: list[str] = []
        self.failed: dict[str, str] = {}

    @contextlib.contextmanager
    def __call__(self, name: str, page, server: Explorer):
        page.errors.clear()
        page.requests.clear()
        try:
            yield
            assert page.errors == [], f"console errors: {page.errors[:3]}"
            elsewhere = [u for u in page.requests if not u.startswith(server.url + "/")]
            assert not elsewhere, f"requested elsewhere: {elsewhere[:3]}"
        except Exception as err:  # a failed page is reported, the others still run
            self.failed[name] = f"{type(err).__name__}: {err}"
            if name in self.passed:
                self.passed.remove(name)
            traceback.print_exc()
            print(f"CHECK FAILED {name}: {self.failed[name]}", flush=True)
        else:
            if name not in self.passed and name not in self.failed:
                self.passed.append(name)


# --- the flow ----------------------------------------------------------------------------------


def part_url(server: Explorer, dataset: str, suffix: str = "", **query) -> str:
    url = f"{server.url}/p/{dataset}/{RUN_CONFIG}{suffix}"
    return url + ("?" + urllib.parse.urlencode(query) if query else "")


def node_url(server: Explorer, dataset: str, node_id: str, **query) -> str:
    return part_url(server, dataset, "/c/" + urllib.parse.quote(node_id, safe="/"), **query)


def cold_search(page, database: Path, dataset: str, query: str, log: Path) -> dict:
    """The first page a fresh server answers is a search: it reads the index, loads the model."""
    server = Explorer(database, log)
    try:
        timing = visit(
            page, navigate(page, part_url(server, dataset, "/search", q=query)), "search"
        )
        assert len(page.texts("#text-hits > li")) == SEARCH_HITS
    finally:
        server.stop()
    assert not server.tracebacks(), f"a traceback in {server.log}"
    return timing | {"startup_s": server.startup_s}


def browse(page, server: Explorer, database: Path, dataset: str, size: Size, checks: Checks):
    """The pages of the clustered partition, in a user's order; their times."""
    times: dict[str, dict] = {}
    nodes = cli_json(database, "tree", dataset, "-r", RUN_CONFIG)
    tops = [n for n in nodes if n["level"] == 0]
    finest = max(n["level"] for n in nodes)
    top = max(tops, key=lambda n: n["size"])
    fine = max((n for n in nodes if n["level"] == finest), key=lambda n: n["size"])

    tree_opened = time.perf_counter()  # (again just before the tree is opened)
    with checks("partitions", page, server):
        times["partitions"] = visit(page, navigate(page, server.url + "/"), "partitions")
        rows = page.evaluate(
            "Array.from(document.querySelectorAll('#partitions tbody tr'))"
            ".map(r => Array.from(r.cells).slice(0, 3).map(c => c.textContent.trim()))"
        )
        listed = cli_json(database, "datasets")
        assert rows == [[p["dataset"], p["run_config"], f"{p['texts']:,}"] for p in listed], rows

    with checks("tree", page, server):
        tree_opened = time.perf_counter()
        times["tree"] = visit(page, navigate(page, part_url(server, dataset)), "tree")
        settle(page, "document.getElementById('tree').dataset.ready === 'true'")
        assert page.texts("#tree > li > .row a.name") == [n["name"] for n in tops]
        assert page.texts("#tree > li > .row .size") == [f"{n['size']:,}" for n in tops]
        first = tops[0]  # the tree lists the largest first
        button = f'#tree > li[data-node="{first["node_id"]}"] > .row > button.toggle'
        times["expand"] = interact(page, lambda: page.click(button), "expanded")
        below = f'#tree > li[data-node="{first["node_id"]}"] > ul.children > li > .row a.name'
        children = [n["name"] for n in nodes if n["parent_id"] == first["node_id"]]
        assert page.texts(below) == children
        assert page.evaluate("location.hash").startswith("#open=")
        shot(page, "tree", size.screenshots)

    with checks("cluster", page, server):
        url = node_url(server, dataset, top["node_id"])
        times["cluster_top"] = visit(page, navigate(page, url), "cluster")
        assert page.texts("#cluster-name") == [top["name"]]
        assert page.texts("#cluster-size") == [f"{top['size']:,}"]
        assert len(page.texts("#texts > li")) == min(PER_PAGE, top["size"])
        times["typical"] = _drawn(page, "typical", time.perf_counter(), 120)
        assert len(page.texts("#typical > li")) == min(5, top["size"])
        shot(page, "cluster", size.screenshots)

    if top["size"] > PER_PAGE:
        with checks("cluster page 2", page, server):
            first_rows = page.evaluate(
                "Array.from(document.querySelectorAll('#texts > li')).map(e => e.dataset.row)"
            )
            times["cluster_page2"] = visit(page, lambda: page.click("nav.pager a.next"), "cluster")
            assert address(page).endswith(f"/c/{top['node_id']}?page=2"), address(page)
            assert page.evaluate("document.getElementById('texts').start") == PER_PAGE + 1
            rows = page.evaluate(
                "Array.from(document.querySelectorAll('#texts > li')).map(e => e.dataset.row)"
            )
            assert len(rows) == min(PER_PAGE, top["size"] - PER_PAGE)
            assert not set(rows) & set(first_rows)

    with checks("cluster", page, server):  # the largest fine cluster: counted with the above
        url = node_url(server, dataset, fine["node_id"])
        times["cluster_fine"] = visit(page, navigate(page, url), "cluster")
        assert page.texts("#cluster-name") == [fine["name"]]
        assert page.texts("#cluster-size") == [f"{fine['size']:,}"]
        assert len(page.texts("#texts > li")) == min(PER_PAGE, fine["size"])

    searches = []
    gap = round(time.perf_counter() - tree_opened, 1)
    with checks("search", page, server):
        for i, query in enumerate(QUERIES[: size.searches]):
            url = part_url(server, dataset, "/search", q=query)
            searches.append(visit(page, navigate(page, url), "search"))
            if i == 0:
                shown_hits = page.texts("#text-hits > li .text")
                assert len(shown_hits) == SEARCH_HITS
                assert page.texts("#cluster-hits a.name")
            if i == 1:  # the model loaded: the page says how long a search takes
                shot(page, "search", size.screenshots)
        cli = cli_json(database, "search", QUERIES[0], "-d", dataset, "-r", RUN_CONFIG, "-n", "20")
        assert shown_hits[:5] == [shown(hit["text"]) for hit in cli["texts"][:5]]
    if searches:
        times["first_search"] = searches[0] | {"after_tree_s": gap}
        keys = ("ms", "wall_ms", "server_ms", "response_ms", "parsed_ms")
        times["search"] = {k: statistics.median(s[k] for s in searches) for k in keys}
        times["search"]["all_ms"] = [round(s["ms"]) for s in searches]

    with checks("cluster", page, server):  # again, the index and the model in memory
        url = node_url(server, dataset, top["node_id"])
        times["cluster_top_again"] = visit(page, navigate(page, url), "cluster")
        assert page.texts("#cluster-size") == [f"{top['size']:,}"]

    with checks("map", page, server):
        times["map"] = visit(page, navigate(page, part_url(server, dataset, "/map")), "map")
        target = page.evaluate(MAP_TARGET)
        assert target["points"] == sum(n["size"] for n in tops), target["points"]
        shot(page, "map", size.screenshots)
        assert "x" in target, "no point of the map could be clicked"
        page.call("Input.dispatchMouseEvent", type="mouseMoved", x=target["x"], y=target["y"])
        time.sleep(0.5)  # plotly picks the point under the pointer on hover
        times["map_click"] = visit(
            page, lambda: page.mouse_click(target["x"], target["y"]), "cluster_name"
        )
        landed = address(page).split("/c/", 1)[1]
        assert landed in target["near"], (landed, target["near"])
    return times


def changes_seen(page, server: Explorer, database: Path, dataset: str, size: Size, checks: Checks):
    """The changes page after the re-clustering, against `changes --json`, and its first
    emerging row's cluster page; the report's rows."""
    report = cli_json(database, "changes", dataset, "-r", RUN_CONFIG)
    times = {}
    with checks("changes", page, server):
        times["changes"] = visit(
            page, navigate(page, part_url(server, dataset, "/changes")), "changes"
        )
        rows = page.evaluate(
            "Array.from(document.querySelectorAll('#changes tbody tr')).map(r => "
            "[r.cells[0].textContent.trim(), r.querySelector('.event').textContent, "
            "!!r.querySelector('.tag.emerging')])"
        )
        assert rows == [[r["node_id"], r["event"], r["emerging"]] for r in report], rows[:5]
        shot(page, "changes", size.screenshots)
        emerging = [r for r in report if r["emerging"]]
        assert emerging, "no emerging cluster on the page"
        link = f'#changes tbody tr.emerging a.change-link[href$="/c/{emerging[0]["node_id"]}"]'
        times["emerging_cluster"] = visit(page, lambda: page.click(link), "cluster_name")
        assert address(page).endswith("/c/" + emerging[0]["node_id"])
        assert page.texts("#lineage .tag.emerging") == ["emerging"]
    return report, times


def composition(database: Path, dataset: str) -> pl.DataFrame:
    """Per cluster of every level: its texts and how many of them were planted."""
    import duckdb

    with duckdb.connect(str(database), read_only=True) as conn:
        return conn.execute(
            "SELECT a.level_name, a.cluster_id, count(*)::BIGINT AS texts, "
            "sum((t.text_id LIKE 'new:%')::INT)::BIGINT AS planted FROM clustering.assignments a "
            "JOIN clustering.texts t USING (dataset, run_config, row_idx) "
            "WHERE dataset = ? AND run_config = ? GROUP BY ALL",
            [dataset, RUN_CONFIG],
        ).pl()


def emerging_figures(report: list[dict], made: pl.DataFrame, planted_texts: int) -> dict:
    """Each emerging cluster with its texts and planted texts; whether one is mostly planted."""
    counts = {(r["level_name"], r["cluster_id"]): r for r in made.iter_rows(named=True)}
    rows, per_level = [], {}
    for row in report:
        if not row["emerging"]:
            continue
        found = counts.get((row["level_name"], row["cluster_id"]), {"texts": 0, "planted": 0})
        share = found["planted"] / found["texts"] if found["texts"] else 0.0
        rows.append({k: row[k] for k in ("node_id", "level_name", "event", "size")}
                    | {"planted": found["planted"], "share": share})  # fmt: skip
        if share > 0.5:
            per_level[row["level_name"]] = per_level.get(row["level_name"], 0) + found["planted"]
    mostly = sum(1 for r in rows if r["share"] > 0.5)
    return {
        "rows": rows,
        "emerging_found": mostly > 0,
        "false_emerging": len(rows) - mostly,
        "planted_in_emerging": round(max(per_level.values(), default=0) / planted_texts, 3),
    }


def run(work: Path, size: Size) -> dict:
    began = time.perf_counter()
    dataset = (
        f"banking77_{size.texts // 1000}k" if size.texts >= 1000 else f"banking77_{size.texts}"
    )
    database = work / "explorer.duckdb"
    datasets = work / "explorer_datasets"
    datasets.mkdir(parents=True, exist_ok=True)
    for stale in (database, Path(f"{database}.wal")):
        stale.unlink(missing_ok=True)
    stage = time.perf_counter()
    texts, vectors = base_texts(work, size)
    write_texts(datasets, dataset, texts)
    store_vectors(database, texts, vectors)
    print(f"{texts.height:,} texts and their vectors in {time.perf_counter() - stage:.0f} s")
    first = cluster_tree(database, datasets, dataset)
    print(f"clustered {dataset} in {first['seconds']:.0f} s", flush=True)

    checks = Checks()
    logs = work / "explorer_logs"
    logs.mkdir(exist_ok=True)
    with Browser() as page:
        prepare(page)
        cold = None
        try:
            cold = cold_search(page, database, dataset, QUERIES[0], logs / "cold.log")
        except Exception as err:
            checks.failed["cold search"] = f"{type(err).__name__}: {err}"
            traceback.print_exc()
        server = Explorer(database, logs / "explorer.log")
        try:
            load = [os.getloadavg()[0]]
            times = browse(page, server, database, dataset, size, checks)
            load.append(os.getloadavg()[0])
            topic, topic_vectors = topic_texts(work, size.topic)
            new, new_vectors = planted(
                topic, topic_vectors, round(PLANTED_SHARE * size.texts), texts.height
            )
            store_vectors(database, new, new_vectors)
            write_texts(datasets, dataset, pl.concat([texts, new]))
            second = cluster_tree(database, datasets, dataset)
            print(
                f"appended {new.height:,} alarm texts ({topic.height} real), re-clustered in "
                f"{second['seconds']:.0f} s",
                flush=True,
            )
            report, changed = changes_seen(page, server, database, dataset, size, checks)
            times |= changed
        finally:
            server.stop()
        if server.tracebacks():
            checks.failed["server log"] = f"a traceback in {server.log}"
    figures = emerging_figures(report, composition(database, dataset), new.height)

    def ms(name: str):
        return None if name not in times else round(times[name]["ms"], 1)

    clusters = [ms(n) for n in ("cluster_top", "cluster_page2", "cluster_fine") if n in times]
    result = {
        "tree_ms": ms("tree"),
        "cluster_ms": max(clusters) if clusters else None,  # the worst of the three
        "search_ms": ms("search"),
        "cold_search_ms": None if cold is None else round(cold["ms"], 1),
        "emerging_found": figures["emerging_found"],
        "pages_checked": len(checks.passed),
        "texts": texts.height,
        "seconds": round(time.perf_counter() - began, 1),
        "cluster_top_ms": ms("cluster_top"),
        "cluster_page2_ms": ms("cluster_page2"),
        "cluster_median_ms": statistics.median(clusters) if clusters else None,
        "cluster_fine_ms": ms("cluster_fine"),
        "typical_ms": ms("typical"),
        "expand_ms": ms("expand"),
        "first_search_ms": ms("first_search"),
        "cluster_again_ms": ms("cluster_top_again"),
        "partitions_ms": ms("partitions"),
        "map_ms": ms("map"),
        "changes_ms": ms("changes"),
        "startup_s": round(server.startup_s, 2),
        "planted": new.height,
        "emerging_clusters": len(figures["rows"]),
        "false_emerging": figures["false_emerging"],
        "planted_in_emerging": figures["planted_in_emerging"],
        "cluster_s": round(first["seconds"], 1),
        "recluster_s": round(second["seconds"], 1),
        "checks_failed": sorted(checks.failed),
        "load_avg": [round(x, 1) for x in load],
    }
    report_lines(times, cold, checks, figures, result, dataset)
    return result


def report_lines(times, cold, checks, figures, result, dataset) -> None:
    print(
        f"{machine()}; load average (1 min) {result['load_avg'][0]} before the pages, "
        f"{result['load_avg'][1]} after"
    )
    print(
        f"{dataset}: {result['texts']:,} texts; explorer started in {result['startup_s']} s; "
        "times from the navigation's start to the frame that draws the content, in the page "
        "(wall clock around the DevTools navigate-and-wait beside it), ms:"
    )
    for name, timing in [("cold_search", cold), *times.items()]:
        if timing is None:
            continue
        after = timing.get("after_tree_s")
        extra = f" (each: {timing['all_ms']})" if "all_ms" in timing else ""
        if after is not None:
            extra = f" ({after} s after the tree page was opened)"
        flag = " (no frame: when the element appeared)" if timing.get("no_frame") else ""
        parts = ""
        if "server_ms" in timing:
            parts = (
                f"  (server {timing['server_ms']:.0f}, response ends {timing['response_ms']:.0f}, "
                f"parsed {timing['parsed_ms']:.0f})"
            )
        print(
            f"  {name:18s} {timing['ms']:8.1f}  wall {timing['wall_ms']:8.1f}{parts}{extra}{flag}"
        )
    print(f"pages checked ({len(checks.passed)}): {', '.join(checks.passed)}")
    for name, why in checks.failed.items():
        print(f"  FAILED {name}: {why}")
    print(
        f"after {result['planted']:,} alarm texts were appended and the partition re-clustered: "
        f"{len(figures['rows'])} emerging clusters"
    )
    for row in figures["rows"]:
        print(
            f"  {row['node_id']:12s} {row['event']:7s} {row['size']:7,d} texts, "
            f"{row['planted']:7,d} planted ({100 * row['share']:.0f}%)"
        )
    print(
        f"planted texts inside emerging, mostly planted clusters (best level): "
        f"{100 * figures['planted_in_emerging']:.0f}%; emerging clusters mostly of old texts: "
        f"{figures['false_emerging']}"
    )
    for name, (holds, bar) in BARS.items():
        value = result[name]
        state = "n/a" if value is None else "met" if holds(value) else "UNMET"
        print(f"bar {name} {bar}: {value} {state}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="500 texts, for the tests")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if not chromium():
        raise SystemExit("the explorer benchmark needs headless Chromium: apt-get install chromium")
    if not args.smoke:
        OUT.mkdir(parents=True, exist_ok=True)
        result = run(OUT, FULL)
    else:
        with tempfile.TemporaryDirectory(prefix="explorer_smoke_") as tmp:
            result = run(Path(tmp), SMOKE)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
