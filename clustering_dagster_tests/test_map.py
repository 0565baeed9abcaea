"""The interactive map, written by the `cluster_map` asset and by `clustering-dagster map`, checked
as a browser shows it (Debian's headless Chromium over the DevTools protocol): the points, the
names, the hover, the search box, no console error and no request beyond the file itself."""

import json
import re
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from plotly.offline import get_plotlyjs

from .support.chromium import Browser, chromium
from .support.explored import CLI, DATASET, LLM_CONFIG, explored_database

READY = "document.getElementById('map').dataset.ready === 'true'"
LEGEND = "Array.from(document.querySelectorAll('.legendtext')).map(e => e.textContent)"
LABELS = "Array.from(document.querySelectorAll('.annotation-text')).map(e => e.textContent)"
MATCHES = "document.getElementById('matches').textContent"
SELECTED = "document.getElementById('map').data.map(t => (t.selectedpoints || []).length)"
HOVER = "Array.from(document.querySelectorAll('.hovertext')).map(e => e.textContent).join(' ')"
POINT = """(() => {
  const d = document.getElementById('map'), L = d._fullLayout, r = d.getBoundingClientRect();
  const t = d.data[%d];
  return [r.left + L._size.l + L.xaxis.l2p(t.x[0]), r.top + L._size.t + L.yaxis.l2p(t.y[0])];
})()"""


@pytest.fixture(scope="session")
def explored(tmp_path_factory):
    return explored_database(tmp_path_factory)


def type_into_search(page, text: str) -> None:
    page.evaluate(
        f"(() => {{ const box = document.getElementById('search'); box.value = {json.dumps(text)};"
        " box.dispatchEvent(new Event('input')); })()"
    )


def hover_first_point(page, trace: int = 0) -> str:
    x, y = page.evaluate(POINT % trace)
    page.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
    page.wait_until(f"({HOVER}).length > 0", timeout=20)
    return page.evaluate(HOVER)


def test_the_asset_writes_a_self_contained_map_per_partition(explored):
    written = explored.workspace.sql(
        "SELECT run_config, stats->>'path' AS path FROM clustering.materializations "
        "WHERE asset = 'cluster_map' ORDER BY run_config"
    )
    assert written["run_config"].to_list() == ["default", LLM_CONFIG]
    maps = explored.database.parent / "maps"
    for run_config, path in written.iter_rows():
        assert Path(path) == maps / f"{DATASET}__{run_config}.html" and Path(path).is_file()
        page = Path(path).read_text()
        # plotly.js is inlined whole (its code names URLs it never loads for a scatter plot);
        # the rest of the page names none, and nothing is loaded from anywhere
        assert get_plotlyjs() in page
        rest = page.replace(get_plotlyjs(), "")
        assert "http:" not in rest and "https:" not in rest
        assert not re.search(r"<(script|link|img|iframe|source|embed)\b[^>]*\b(src|href)=", page)
    assert sorted(p.name for p in maps.iterdir()) == [
        f"{DATASET}__default.html",
        f"{DATASET}__{LLM_CONFIG}.html",
    ]  # written atomically: no temporary file left behind


def test_the_map_shows_points_names_hover_and_search_without_network(explored, tmp_path):
    assert chromium(), "the map test needs headless Chromium: apt-get install chromium"
    out = tmp_path / "bank.html"
    done = explored.run("map", DATASET, "--out", str(out))
    assert done.returncode == 0 and Path(done.stdout.strip()) == out.resolve()
    nodes = explored.json("tree", DATASET)
    tops = [n for n in nodes if n["level"] == 0]
    all_texts = [
        text.lower()
        for text in explored.workspace.sql(
            "SELECT text FROM clustering.texts WHERE dataset = ? AND run_config = 'default'",
            [DATASET],
        )["text"]
    ]
    assert len(all_texts) == 240
    expected = sum("top" in t and "up" in t for t in all_texts)
    assert expected > 0

    with Browser() as page:
        page.open(out.as_uri() + "#q=top%20up")
        page.wait_until(READY)
        assert sum(page.evaluate("document.getElementById('map').data.map(t => t.x.length)")) == 240
        assert page.evaluate(LEGEND) == [f"{t['name']} ({t['size']})" for t in tops]
        assert {t["name"] for t in tops} <= set(page.evaluate(LABELS))
        assert page.evaluate(MATCHES) == f"{expected} of 240 texts match"
        assert sum(page.evaluate(SELECTED)) == expected

        type_into_search(page, "exchange")
        wanted = sum("exchange" in t for t in all_texts)
        page.wait_until(f"{MATCHES} === '{wanted} of 240 texts match'")
        assert sum(page.evaluate(SELECTED)) == wanted
        type_into_search(page, "")
        page.wait_until(f"{MATCHES} === ''")

        hover = hover_first_point(page)
        shown = "".join(hover.lower().split())  # long texts wrap onto lines in the hover box
        assert any("".join(text.split()) in shown for text in all_texts)
        for level in explored.json("datasets")[0]["levels"]:
            assert f"{level} {level}/" in hover
        page.screenshot(tmp_path / "map.png")

        merged = explored.database.parent / "maps" / f"{DATASET}__{LLM_CONFIG}.html"
        page.open(merged.as_uri())
        page.wait_until(READY)
        llm_tops = [n for n in explored.json("tree", DATASET, "-r", LLM_CONFIG) if n["level"] == 0]
        assert page.evaluate(LEGEND) == [f"{t['name']} ({t['size']})" for t in llm_tops]
        assert "parent_1 parent_1/" in hover_first_point(page)

        assert page.errors == []
        assert page.requests and all(url.startswith("file://") for url in page.requests)


def test_map_serve_answers_on_localhost_with_the_page_only(explored, tmp_path):
    out = tmp_path / "served.html"
    server = subprocess.Popen(
        [CLI, "--db", str(explored.database), "map", DATASET, "--out", str(out), "--serve",
         "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        # started as some job runners start children: SIGTERM ignored and blocked
        preexec_fn=lambda: (
            signal.signal(signal.SIGTERM, signal.SIG_IGN),
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}),
        ),
    )  # fmt: skip
    try:
        assert Path(server.stdout.readline().strip()) == out.resolve()
        url = re.search(r"http://127\.0\.0\.1:\d+/", server.stdout.readline()).group(0)
        with urllib.request.urlopen(url, timeout=30) as reply:
            assert reply.headers["Content-Type"].startswith("text/html")
            assert reply.read() == out.read_bytes()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url + "results.duckdb", timeout=30)
        assert refused.value.code == 404
    finally:
        server.terminate()
        server.wait(timeout=30)
