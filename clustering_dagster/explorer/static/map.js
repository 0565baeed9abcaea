/* The map page: every text at its 2-D position (plotly's WebGL points, plotly.js from /vendor),
   coloured by its top cluster; a click on a point or a name opens that cluster's page. Names are
   placed greedily, largest cluster first, each only where its box overlaps no name already
   placed; they are placed again after every zoom or pan. */
"use strict";
(function () {
  const E = window.explorer;
  const div = document.getElementById("map");
  const meta = document.getElementById("map-meta");
  const FONT = '"Open Sans", verdana, arial, sans-serif';
  const measure = document.createElement("canvas").getContext("2d");
  const decoder = document.createElement("textarea");
  let data = null;
  let shown = [];  // the node id of each placed label, by annotation index

  function plain(escaped) {  // the text plotly shows for a label escaped for it
    decoder.innerHTML = escaped;
    return decoder.value;
  }

  function open(node) {
    if (node) location.href = data.cluster_base + encodeURI(node) + data.query;
  }

  function overlaps(a, b) {
    return a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1;
  }

  function placeLabels() {
    const layout = div._fullLayout;
    const xaxis = layout.xaxis, yaxis = layout.yaxis, area = layout._size;
    const placed = [], annotations = [];
    shown = [];
    data.labels.forEach(function (label) {
      const size = label.level === 0 ? 14 : 11;
      measure.font = size + "px " + FONT;
      const width = measure.measureText(plain(label.text)).width + 12;
      const height = size * 1.35 + 8;
      const x = xaxis.l2p(label.x), y = yaxis.l2p(label.y);
      const box = {x0: x - width / 2, x1: x + width / 2, y0: y - height / 2, y1: y + height / 2};
      if (box.x0 < 0 || box.y0 < 0 || box.x1 > area.w || box.y1 > area.h) return;
      if (placed.some(function (other) { return overlaps(box, other); })) return;
      placed.push(box);
      shown.push(label.node_id);
      annotations.push({
        x: label.x, y: label.y, text: label.text, showarrow: false, captureevents: true,
        font: {size: size, color: label.level === 0 ? "#111" : "#444", family: FONT},
        bgcolor: label.level === 0 ? "rgba(255,255,255,0.8)" : "rgba(255,255,255,0.6)",
        borderpad: 2,
      });
    });
    return Plotly.relayout(div, {annotations: annotations});
  }

  function draw(body) {
    data = body;
    const traces = data.traces.map(function (t) {
      return {
        type: "scattergl", mode: "markers", name: t.name, x: t.x, y: t.y, text: t.hover,
        customdata: t.node, hovertemplate: "%{text}<extra></extra>",
        marker: {color: t.color, size: 5, opacity: 0.75},
      };
    });
    const layout = {
      hovermode: "closest", dragmode: "pan", margin: {l: 10, r: 10, t: 34, b: 10},
      xaxis: {visible: false}, yaxis: {visible: false, scaleanchor: "x"},
      legend: {itemsizing: "constant", title: {text: "Top clusters"}},
      hoverlabel: {align: "left"},
    };
    const config = {scrollZoom: true, displaylogo: false, responsive: true};
    return Plotly.newPlot(div, traces, layout, config).then(function () {
      div.on("plotly_click", function (event) {
        if (event && event.points && event.points.length) open(event.points[0].customdata);
      });
      div.on("plotly_clickannotation", function (event) { open(shown[event.index]); });
      div.on("plotly_relayout", function (changed) {
        const keys = Object.keys(changed || {});
        if (keys.length && keys.every(function (k) { return k.startsWith("annotations"); })) return;
        placeLabels();
      });
      meta.textContent = E.number(data.total) + " texts · names: " + E.visible(data.names);
      return placeLabels();
    });
  }

  fetch(div.dataset.api, {headers: {Accept: "application/json"}})
    .then(function (reply) {
      return reply.json().then(function (body) {
        if (!reply.ok) throw new Error(body.error || reply.statusText);
        return body;
      });
    })
    .then(draw)
    .then(function () { div.dataset.ready = "true"; })
    .catch(function (err) {
      meta.textContent = "error: " + err.message;
      meta.classList.add("error");
      div.dataset.ready = "error";
    });
})();
