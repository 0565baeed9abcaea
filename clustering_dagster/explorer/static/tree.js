/* The tree page: expand and collapse clusters, their children read from the JSON endpoint
   (`api/children?node=`); the open clusters are kept in the address (`#open=coarse/0,fine/3`), so
   a copied address opens the tree as it was. */
"use strict";
(function () {
  const E = window.explorer;
  const tree = document.getElementById("tree");
  if (!tree) return;
  const open = [];  // node ids, each after its parent

  function row(node) {
    const li = E.el("li", "node" + (node.folded ? " folded" : ""));
    li.dataset.node = node.node_id;
    const line = E.el("div", "row");
    if (node.n_children) {
      const toggle = E.el("button", "toggle", "▸");
      toggle.type = "button";
      toggle.setAttribute("aria-expanded", "false");
      toggle.setAttribute("aria-label", "Expand " + node.node_id);
      line.append(toggle);
    } else {
      const leaf = E.el("span", "toggle leaf", "·");
      leaf.setAttribute("aria-hidden", "true");
      line.append(leaf);
    }
    const size = E.el("span", "size", E.number(node.size));
    size.title = node.size + " texts, " + E.pct(node.share) + " of all";
    const name = E.el("a", "name" + (node.folded ? " folded" : ""), node.name || node.node_id);
    name.href = node.url;
    line.append(E.bar(node.bar), " ", size, " ", E.el("span", "share", E.pct(node.share)), " ",
                name, " ", E.el("span", "id", node.node_id));
    marks(node).forEach(function (mark) { line.append(" ", mark); });
    li.append(line);
    if (node.folded) {
      li.append(E.el("div", "summary", E.number(node.size) +
                     " texts below the privacy threshold: only their count is shown."));
    } else if (node.summary) {
      li.append(E.el("div", "summary", node.summary));
    } else if (node.keywords && node.keywords.length) {
      li.append(E.el("div", "keywords", node.keywords.join(", ")));
    }
    return li;
  }

  // what people set, as the server's `marks` macro shows it
  function marks(node) {
    const shown = [];
    function mark(symbol, title) {
      const span = E.el("span", "mark", symbol);
      span.title = E.visible(title);
      shown.push(span);
      return span;
    }
    if (node.named_by === "person") mark("✎", "named by a person");
    if (node.placed_by === "person") mark("↳", "placed by a person");
    (node.tags || []).forEach(function (tag) { shown.push(E.el("span", "label", tag)); });
    if (node.flag) mark("⚑", "flagged for review: " + node.flag).classList.add("flagged");
    return shown;
  }

  function find(id) {
    return tree.querySelector('li[data-node="' + CSS.escape(id) + '"]');
  }

  function remember() {
    const hash = open.length ? "#open=" + open.map(encodeURIComponent).join(",") : "";
    history.replaceState(null, "", location.pathname + location.search + hash);
    document.querySelectorAll(".names a.choice").forEach(function (a) {
      a.href = a.href.split("#")[0] + hash;
    });
  }

  async function children(li) {
    const url = new URL(tree.dataset.api, location.href);
    url.searchParams.set("node", li.dataset.node);
    const reply = await fetch(url, {headers: {Accept: "application/json"}});
    const body = await reply.json();
    if (!reply.ok) throw new Error(body.error || reply.statusText);
    const list = E.el("ul", "children");
    body.children.forEach(function (node) { list.append(row(node)); });
    return list;
  }

  async function expand(li) {
    const toggle = li.querySelector(":scope > .row > .toggle");
    if (!toggle || toggle.getAttribute("aria-expanded") === "true") return;
    let list = li.querySelector(":scope > ul.children");
    if (!list) {
      toggle.disabled = true;
      try {
        list = await children(li);
      } catch (err) {
        li.append(E.el("div", "error", "error: " + err.message));
        return;
      } finally {
        toggle.disabled = false;
      }
      li.append(list);
    }
    list.hidden = false;
    toggle.textContent = "▾";
    toggle.setAttribute("aria-expanded", "true");
    toggle.setAttribute("aria-label", "Collapse " + li.dataset.node);
    if (!open.includes(li.dataset.node)) open.push(li.dataset.node);
  }

  function collapse(li) {
    const toggle = li.querySelector(":scope > .row > .toggle");
    const list = li.querySelector(":scope > ul.children");
    if (list) list.hidden = true;
    toggle.textContent = "▸";
    toggle.setAttribute("aria-expanded", "false");
    toggle.setAttribute("aria-label", "Expand " + li.dataset.node);
    const below = new Set([li.dataset.node]);
    li.querySelectorAll("li[data-node]").forEach(function (n) { below.add(n.dataset.node); });
    for (let i = open.length - 1; i >= 0; i--) if (below.has(open[i])) open.splice(i, 1);
    li.querySelectorAll('ul.children li .toggle[aria-expanded="true"]').forEach(function (t) {
      collapse(t.closest("li"));
    });
  }

  tree.addEventListener("click", async function (event) {
    const toggle = event.target.closest("button.toggle");
    if (!toggle) return;
    const li = toggle.closest("li");
    if (toggle.getAttribute("aria-expanded") === "true") collapse(li);
    else await expand(li);
    remember();
  });

  const all = document.getElementById("collapse-all");
  if (all) all.addEventListener("click", function () {
    tree.querySelectorAll(':scope > li > .row > .toggle[aria-expanded="true"]').forEach(
      function (t) { collapse(t.closest("li")); });
    remember();
  });

  async function restore() {
    const hash = location.hash.slice(1);
    if (hash.startsWith("open=")) {
      for (const part of hash.slice(5).split(",")) {
        let id;
        try { id = decodeURIComponent(part); } catch (err) { continue; }
        const li = id && find(id);
        if (li) await expand(li);
      }
      remember();
    }
    tree.dataset.ready = "true";
  }
  restore();
})();
