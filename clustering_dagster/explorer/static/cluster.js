/* The cluster page, when the partition's search index was not read yet: its typical texts (the
   nearest its centroid) come from `api/typical` once it is. */
"use strict";
(function () {
  const E = window.explorer;
  const list = document.getElementById("typical");
  if (!list || !list.dataset.api) return;
  fetch(list.dataset.api, {headers: {Accept: "application/json"}})
    .then(function (reply) {
      return reply.json().then(function (body) {
        if (!reply.ok) throw new Error(body.error || reply.statusText);
        return body;
      });
    })
    .then(function (body) {
      list.replaceChildren();
      body.typical.forEach(function (row) {
        const item = E.el("li");
        const score = E.el("span", "score", Number(row.similarity).toFixed(3));
        score.title = "cosine similarity to the cluster's centroid";
        item.append(E.el("span", "text", row.text), " ", score);
        list.append(item);
      });
      list.removeAttribute("aria-busy");
      list.dataset.ready = "true";
    })
    .catch(function (err) {
      list.replaceChildren(E.el("li", "error", "error: " + err.message));
      list.dataset.ready = "error";
    });
})();
