"""The interactive map: one self-contained HTML page per partition, viewable with no network.

plotly.js comes inlined from the `plotly` wheel; the points, hover texts and names are inlined as
JSON. Points are coloured by the top level of the tree; hovering shows a text and its cluster at
every level; wheel and drag zoom and pan; the search box highlights the texts holding every word
typed (the address `map.html#q=refund` opens with that search); the legend and the labels on the
map name the top clusters.
"""

import html
import json
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from ..storage.store import Partition, read_partition
from .reading import NamedTree, load_tree, text_names

# Distinguishable colours for the top clusters (cycled past 20).
PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#ad494a", "#637939", "#8c6d31", "#843c39", "#7b4173",
    "#3182bd", "#e6550d", "#31a354", "#756bb1",
]  # fmt: skip

SECOND_LABELS = 30  # the largest second-level clusters named on the map
HOVER_CHARS = 600
HOVER_WIDTH = 80


@dataclass(frozen=True)
class MapData:
    """What the page shows: every text's map position, top cluster and hover label."""

    part: Partition
    tree: NamedTree
    points: pl.DataFrame  # row_idx, x, y, text, node_1 (if the tree has 2 levels), top, leaf,
    # hover


def default_path(database: Path, part: Partition) -> Path:
    """Where the map of a partition is written: `maps/` beside the DuckDB file."""
    return Path(database).parent / "maps" / f"{part.dataset}__{part.run_config}.html"


def _plotly_text(text: str) -> str:
    """Text for plotly's labels, which read a little HTML: `<`, `>` and `&` escaped, quotes kept
    (plotly decodes `&lt;` but would show `&quot;` as it is)."""
    return html.escape(text, quote=False)


def _hover(text: str, chain: list[tuple[str, str, str]]) -> str:
    short = text if len(text) <= HOVER_CHARS else text[:HOVER_CHARS] + "..."
    lines = [_plotly_text(line) for line in textwrap.wrap(short, HOVER_WIDTH)] or [""]
    names = [
        f"<b>{_plotly_text(level)}</b> {_plotly_text(node)}: {_plotly_text(name or '')}"
        for level, node, name in chain
    ]
    return "<br>".join(lines + [""] + names)


def map_data(conn, part: Partition, alias: str | None = None) -> MapData:
    """Read a partition's map (through `read_partition`, so a run reads its own version)."""
    tree = load_tree(conn, part, alias)
    named = text_names(conn, tree)
    xy = read_partition(conn, "projections", part, "row_idx, map_x AS x, map_y AS y", "row_idx")
    levels = tree.level_names()
    rows = named.join(xy, on="row_idx", how="inner").sort("row_idx")
    hover = [
        _hover(
            row["text"],
            [(levels[d], row[f"node_{d}"], row[f"name_{d}"]) for d in range(len(levels))],
        )
        for row in rows.iter_rows(named=True)
    ]
    second = ["node_1"] if len(levels) > 1 else []
    leaf = f"node_{len(levels) - 1}"  # the point's finest cluster
    points = rows.select(
        "row_idx", "x", "y", "text", *second, top="node_0", leaf=leaf
    ).with_columns(hover=pl.Series(hover, dtype=pl.String))
    return MapData(part, tree, points)


def top_traces(data: MapData) -> Iterator[tuple[dict, pl.DataFrame, dict]]:
    """Per top cluster with points: its node, its points, and its plotly trace's name, colour
    and positions (a page adds what its points show)."""
    tops = data.tree.nodes.filter(pl.col("level") == 0).sort("position")
    for i, top in enumerate(tops.iter_rows(named=True)):
        mine = data.points.filter(pl.col("top") == top["node_id"])
        if mine.height:
            yield (
                top,
                mine,
                {
                    "name": _plotly_text(f"{top['name']} ({top['size']})"),
                    "color": PALETTE[i % len(PALETTE)],
                    "x": mine["x"].round(4).to_list(),
                    "y": mine["y"].round(4).to_list(),
                },
            )


def _page_data(data: MapData) -> dict:
    traces, labels = [], []
    for top, mine, trace in top_traces(data):
        traces.append(
            trace
            | {
                "hover": mine["hover"].to_list(),
                "search": mine["text"].str.to_lowercase().to_list(),
            }
        )
        labels.append(_label(top["name"], mine, 0))
    return {"traces": traces, "labels": _second_labels(data) + labels, "total": data.points.height}


def _label(name: str, points: pl.DataFrame, level: int) -> dict:
    """A name placed at the median of its points."""
    x, y = float(points["x"].median()), float(points["y"].median())
    return {"text": _plotly_text(name), "x": x, "y": y, "level": level}


def _second_labels(data: MapData) -> list[dict]:
    """Smaller labels for the largest nodes of the second level, where there is one."""
    if "node_1" not in data.points.columns:
        return []
    shown = pl.col("node_id").is_in(data.points["node_1"].implode())  # not the folded node
    nodes = data.tree.nodes.filter((pl.col("level") == 1) & shown).sort("size", descending=True)
    return [
        _label(node["name"], data.points.filter(pl.col("node_1") == node["node_id"]), 1)
        for node in nodes.head(SECOND_LABELS).iter_rows(named=True)
    ]


def render(data: MapData) -> str:
    """The page as one HTML string: no external script, style, font or image."""
    from plotly.offline import get_plotlyjs

    part = data.part
    title = f"{part.dataset} | {part.run_config}"
    payload = json.dumps(_page_data(data), ensure_ascii=False).replace("<", "\\u003c")
    tops = data.tree.nodes.filter(pl.col("level") == 0).height
    meta = (
        f"{data.points.height} texts, {tops} top clusters, "
        f"{data.tree.nodes.height} clusters in all; names: {data.tree.names}"
    )
    return PAGE.format(
        title=html.escape(title),
        meta=html.escape(meta),
        plotly=get_plotlyjs(),
        data=payload,
        script=SCRIPT,
    )


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
  html, body {{ margin: 0; height: 100%; font-family: system-ui, sans-serif; }}
  body {{ display: flex; flex-direction: column; }}
  header {{ display: flex; flex-wrap: wrap; align-items: center; gap: 0.4rem 1rem;
           padding: 0.5rem 1rem; border-bottom: 1px solid #ddd; }}
  h1 {{ font-size: 1.1rem; margin: 0; }}
  .meta, #matches {{ color: #555; font-size: 0.9rem; }}
  #search {{ font-size: 1rem; padding: 0.25rem 0.5rem; min-width: 18rem; }}
  #map {{ flex: 1; min-height: 300px; }}
</style>
<script>{plotly}</script>
</head>
<body>
<header>
  <h1>{title}</h1>
  <span class="meta">{meta}</span>
  <input id="search" type="search" placeholder="Highlight texts containing..." autocomplete="off">
  <span id="matches"></span>
</header>
<div id="map"></div>
<script id="map-data" type="application/json">{data}</script>
<script>{script}</script>
</body>
</html>
"""

SCRIPT = r"""
(function () {
  const data = JSON.parse(document.getElementById("map-data").textContent);
  const div = document.getElementById("map");
  const box = document.getElementById("search");
  const matches = document.getElementById("matches");
  const traces = data.traces.map(function (t) {
    return {
      type: "scattergl", mode: "markers", name: t.name, x: t.x, y: t.y, text: t.hover,
      hovertemplate: "%{text}<extra></extra>",
      marker: {color: t.color, size: 5, opacity: 0.75},
      selected: {marker: {size: 9, opacity: 1}},
      unselected: {marker: {opacity: 0.07}},
    };
  });
  const layout = {
    hovermode: "closest", dragmode: "pan", margin: {l: 10, r: 10, t: 40, b: 10},
    xaxis: {visible: false}, yaxis: {visible: false, scaleanchor: "x"},
    legend: {itemsizing: "constant", title: {text: "Top clusters"}},
    hoverlabel: {align: "left"},
    annotations: data.labels.map(function (l) {
      const top = l.level === 0;
      return {x: l.x, y: l.y, text: l.text, showarrow: false,
              font: {size: top ? 14 : 10, color: top ? "#111" : "#555"},
              bgcolor: top ? "rgba(255,255,255,0.75)" : "rgba(255,255,255,0)"};
    }),
  };
  const config = {scrollZoom: true, displaylogo: false, responsive: true};

  function highlight(query) {
    const words = query.toLowerCase().split(/\s+/).filter(Boolean);
    if (!words.length) {
      matches.textContent = "";
      return Plotly.restyle(div, {selectedpoints: data.traces.map(function () { return null; })});
    }
    let found = 0;
    const selected = data.traces.map(function (t) {
      const hits = [];
      t.search.forEach(function (text, i) {
        if (words.every(function (w) { return text.includes(w); })) hits.push(i);
      });
      found += hits.length;
      return hits;
    });
    matches.textContent = found + " of " + data.total + " texts match";
    return Plotly.restyle(div, {selectedpoints: selected});
  }

  let timer = null;
  box.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(function () {
      highlight(box.value);
      history.replaceState(null, "", box.value ? "#q=" + encodeURIComponent(box.value) : "#");
    }, 150);
  });

  function fromHash() {
    const hash = location.hash.slice(1);
    try {
      return decodeURIComponent(hash);
    } catch (err) {  // a malformed address (#q=%E0%A4%A): the search as typed
      return hash;
    }
  }

  Plotly.newPlot(div, traces, layout, config).then(function () {
    const hash = fromHash();
    if (hash.startsWith("q=")) {
      box.value = hash.slice(2);
      return highlight(box.value);
    }
  }).finally(function () { div.dataset.ready = "true"; });
})();
"""
