"""The explorer's pages and their JSON twins. Each handler reads on one short read-only
connection through `core.results` and renders; it runs in Starlette's thread pool. An edit
(POST, `curation`) is saved on a short read-write connection, then the page is shown again."""

import re
import time

import polars as pl
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..core.curation.records import edit_history
from ..core.results.browse import PER_PAGE, is_folded, nearest_nodes, node_text_page
from ..core.results.facets import breakdown
from ..core.results.reading import (
    KEYWORD_NAMES,
    NamedTree,
    node_texts,
    partitions,
    runs,
    summary_aliases,
    tree_centroids,
)
from ..core.storage.store import Partition
from . import curation, history
from .reads import (
    Failure,
    children_views,
    cluster_url,
    connection,
    node_view,
    part_url,
    partition,
)
from .render import ExactJSON, endpoint, page

RUNS_SHOWN = 50  # on the partitions page
TYPICAL = 5  # typical texts on a cluster page
NEIGHBOURS = 8
SEARCH_HITS = 20
MAX_QUERY = 1000  # characters


# --- request parameters ------------------------------------------------------------------------


def _names(request: Request) -> str | None:
    """The names asked for (`?names=alias` or `keywords`); None: as the CLI chooses."""
    return request.query_params.get("names") or None


def _where(request: Request) -> tuple[str, str]:
    return request.path_params["dataset"], request.path_params["run_config"]


def _number(request: Request, key: str, default: int) -> int:
    raw = request.query_params.get(key)
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"[0-9]{1,9}", raw):
        raise Failure(400, f"{key} must be a whole number, not {raw!r}")
    return int(raw)


def _query(request: Request) -> str:
    query = " ".join((request.query_params.get("q") or "").split())
    if len(query) > MAX_QUERY:
        raise Failure(400, f"the query is {len(query)} characters long: at most {MAX_QUERY}")
    return query


def _choices(aliases: dict[str, bool]) -> list[str]:
    """The names a tree can be shown with: the keyword labels, then every summary alias."""
    return [KEYWORD_NAMES, *(alias for alias in aliases if alias != KEYWORD_NAMES)]


def _stages(value) -> list[tuple[str, float]]:
    """A DuckDB MAP (asset -> seconds) as pairs."""
    if isinstance(value, dict):
        return list(value.items())
    return [(item["key"], item["value"]) for item in value or []]


# --- the partitions and their runs -------------------------------------------------------------


def _home(request: Request) -> dict:
    with connection(request.app.state.database) as conn:
        listed = partitions(conn).to_dicts()
        recent = runs(conn, limit=RUNS_SHOWN).to_dicts()
    for run in recent:
        run["part"] = Partition(run["dataset"], run["run_config"])
        run["stages"] = _stages(run.pop("stage_seconds", None))
        run["stage_rows"] = dict(_stages(run.get("stage_rows")))
    for row in listed:
        row["part"] = Partition(row["dataset"], row["run_config"])
        row["runs"] = [run for run in recent if run["part"] == row["part"]]
    return {"partitions": listed, "runs": recent}


@endpoint()
def home(request: Request) -> Response:
    return page(request, "home.html", database=request.app.state.database, **_home(request))


@endpoint(as_json=True)
def home_json(request: Request) -> Response:
    found = _home(request)
    for row in found["partitions"]:
        row["url"] = part_url(row.pop("part"))
        row["runs"] = [run["dagster_run_id"] for run in row["runs"]]
    for run in found["runs"]:
        run["url"] = part_url(run.pop("part"))
        run["stages"] = dict(run["stages"])
    return ExactJSON(found)


# --- the tree ------------------------------------------------------------------------------------


@endpoint()
def tree_page(request: Request) -> Response:
    names = _names(request)
    with partition(request.app.state.database, *_where(request), names) as (conn, tree):
        choices = _choices(summary_aliases(conn, tree.part))
        tops = children_views(tree, None, names)
    request.app.state.search.warm(tree.part, tree.names)
    return page(
        request,
        "tree.html",
        part=tree.part,
        names=names,
        tree=tree,
        choices=choices,
        tops=tops,
        total=sum(n["size"] for n in tops),
        levels=tree.level_names(),
    )


@endpoint(as_json=True)
def children_json(request: Request) -> Response:
    names, node_id = _names(request), request.query_params.get("node") or None
    with partition(request.app.state.database, *_where(request), names) as (_, tree):
        children = children_views(tree, node_id, names)
    return ExactJSON({"node": node_id, "names": tree.names, "children": children})


# --- one cluster ---------------------------------------------------------------------------------


def _cluster(conn, tree: NamedTree, node_id: str, names: str | None, page_no: int) -> dict:
    """Everything the cluster page shows but its typical texts (`_typical`: from the search
    index, which holds every vector in memory); the folded node shows its count only."""
    part, node = tree.part, tree.node(node_id)
    parents = tree.ancestors(node_id)[::-1]
    top = tree.nodes.filter(pl.col("level") == 0)
    within = parents[-1]["size"] if parents else int(top["size"].sum())
    found = {
        "node": node_view(part, node, names, within),
        "path": [node_view(part, p, names) for p in parents],
        "children": children_views(tree, node_id, names),
        "typical": [],
        "texts": None,
        "neighbours": [],
        "facets": None,
        "sizes": [],
        "change": None,
        "centroid": None,
        "edits": [],
    }
    if is_folded(node):
        return found
    found["edits"] = curation.node_edits(edit_history(conn, part), node_id)
    texts = node_text_page(conn, tree, node_id, page_no)
    found["texts"] = {
        "rows": texts.rows.to_dicts(),
        "total": texts.total,
        "page": texts.page,
        "pages": texts.pages,
        "per_page": texts.per_page,
        "first": texts.first,
    }
    centroids = tree_centroids(conn, tree)
    found["centroid"] = centroids.get(node_id)
    nearest = nearest_nodes(tree, centroids, node_id, NEIGHBOURS)
    found["neighbours"] = [
        node_view(part, tree.node(other), names) | {"similarity": similarity}
        for other, similarity in nearest.select("node_id", "similarity").iter_rows()
    ]
    found["facets"] = breakdown(conn, tree, node_id)
    found["sizes"] = history.node_sizes(conn, part, node)
    found["change"] = history.node_change(conn, part, node, names)
    return found


def _typical(request: Request, conn, tree: NamedTree, node_id: str, centroid, lazy: bool):
    """The node's typical texts (nearest its centroid): from the search index when it is in
    memory; else (its reading starts in the background) None when `lazy` (the page then asks
    `api/typical`), or from the file as `clustering-dagster show` reads them."""
    service = request.app.state.search
    if centroid is None:
        return []
    if service.ready(conn, tree.part, tree.names):
        return service.typical(tree.part, tree.names, node_id, centroid, TYPICAL)
    service.warm(tree.part, tree.names)
    if lazy:
        return None
    typical = node_texts(conn, tree, node_id, TYPICAL)
    return typical.select("row_idx", "text_id", "text", "similarity").to_dicts()


@endpoint()
def cluster_page(request: Request) -> Response:
    return _cluster_answer(request)


def _cluster_answer(request: Request, status: int = 200, error: str | None = None) -> Response:
    """The cluster page (`error`: the line of an edit refused, shown above its forms)."""
    names, node_id = _names(request), request.path_params["node_id"]
    page_no = _number(request, "page", 1)
    with partition(request.app.state.database, *_where(request), names) as (conn, tree):
        choices = _choices(summary_aliases(conn, tree.part))
        found = _cluster(conn, tree, node_id, names, page_no)
        centroid = found.pop("centroid")
        found["typical"] = _typical(request, conn, tree, node_id, centroid, lazy=True)
        folded = found["node"]["folded"]
        options = None if folded else curation.edit_options(conn, tree, node_id)
    texts_page = found["texts"]["page"] if found["texts"] else 1
    return page(
        request,
        "cluster.html",
        status=status,
        error=error,
        options=options,
        edit_url=curation.edit_url(
            tree.part, node_id, names=names, page=texts_page if texts_page > 1 else None
        ),
        part=tree.part,
        names=names,
        tree=tree,
        choices=choices,
        chart=history.size_chart(found["sizes"]),
        per_page=PER_PAGE,
        typical_url=part_url(tree.part, "/api/typical", node=node_id, names=names),
        **found,
    )


@endpoint(as_json=True)
def cluster_json(request: Request) -> Response:
    names, node_id = _names(request), request.path_params["node_id"]
    page_no = _number(request, "page", 1)
    with partition(request.app.state.database, *_where(request), names) as (conn, tree):
        found = _cluster(conn, tree, node_id, names, page_no)
        centroid = found.pop("centroid")
        found["typical"] = _typical(request, conn, tree, node_id, centroid, lazy=False)
    return ExactJSON({"names": tree.names} | found)


@endpoint(as_json=True)
def typical_json(request: Request) -> Response:
    """A node's typical texts (the cluster page asks for them when the index was not read)."""
    names, node_id = _names(request), request.query_params.get("node") or ""
    with partition(request.app.state.database, *_where(request), names) as (conn, tree):
        node = tree.node(node_id)
        centroid = None if is_folded(node) else tree_centroids(conn, tree).get(node_id)
        typical = _typical(request, conn, tree, node_id, centroid, lazy=False)
    return ExactJSON({"node": node_id, "typical": typical})


# --- search --------------------------------------------------------------------------------------


def _search(request: Request) -> dict:
    names, query = _names(request), _query(request)
    within = request.query_params.get("within") or None
    state = request.app.state
    with partition(state.database, *_where(request), names) as (conn, tree):
        choices = _choices(summary_aliases(conn, tree.part))
        inside = None if within is None else node_view(tree.part, tree.node(within), names)
    found = {
        "part": tree.part,
        "names": names,
        "tree": tree,
        "choices": choices,
        "query": query,
        "within": inside,
        "clusters": [],
        "texts": [],
        "seconds": None,
    }
    if not query:
        return found
    started = time.perf_counter()
    clusters, texts = state.search.search(tree.part, tree.names, query, within, SEARCH_HITS)
    found["seconds"] = round(time.perf_counter() - started, 3)
    found["clusters"] = [
        hit | {"url": cluster_url(tree.part, hit["node_id"], names=names)}
        for hit in clusters.to_dicts()
    ]
    for hit in texts.to_dicts():
        depth = sum(1 for key in hit if key.startswith("node_"))
        path = [
            {
                "node_id": hit[f"node_{d}"],
                "name": hit[f"name_{d}"] or "",
                "url": cluster_url(tree.part, hit[f"node_{d}"], names=names),
            }
            for d in range(depth)
            if hit[f"node_{d}"] is not None
        ]
        keep = {k: hit[k] for k in ("row_idx", "text_id", "text", "score")}
        found["texts"].append(keep | {"clusters": path})
    return found


@endpoint()
def search_page(request: Request) -> Response:
    return page(request, "search.html", **_search(request))


@endpoint(as_json=True)
def search_json(request: Request) -> Response:
    found = _search(request)
    return ExactJSON(
        {
            "dataset": found["part"].dataset,
            "run_config": found["part"].run_config,
            "names": found["tree"].names,
            "query": found["query"],
            "within": found["within"],
            "clusters": found["clusters"],
            "texts": found["texts"],
        }
    )


# --- the map -------------------------------------------------------------------------------------

# plotly's WebGL points (regl) compile their shader code with `new Function`
MAP_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; worker-src 'self' blob:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


@endpoint()
def map_page(request: Request) -> Response:
    names = _names(request)
    with partition(request.app.state.database, *_where(request), names) as (conn, tree):
        choices = _choices(summary_aliases(conn, tree.part))
    return page(
        request,
        "map.html",
        headers={"Content-Security-Policy": MAP_POLICY},
        part=tree.part,
        names=names,
        tree=tree,
        choices=choices,
    )


@endpoint(as_json=True)
def map_json(request: Request) -> Response:
    names = _names(request)
    state = request.app.state
    with partition(state.database, *_where(request), names) as (conn, tree):
        payload = state.maps.get(conn, tree.part, names)
    return ExactJSON(payload)


# --- what changed --------------------------------------------------------------------------------


def _changes(request: Request) -> dict:
    names = _names(request)
    since = request.query_params.get("since") or None
    level = request.query_params.get("level") or None
    event = request.query_params.get("event") or None
    with partition(request.app.state.database, *_where(request), names) as (conn, tree):
        choices = _choices(summary_aliases(conn, tree.part))
        found = history.partition_changes(conn, tree, since, level, event)
        earlier = runs(conn, tree.part.dataset, tree.part.run_config, RUNS_SHOWN).to_dicts()
        attention = curation.attention(edit_history(conn, tree.part), tree, names)
    for row in found["rows"]:
        row["url"] = (
            None
            if row["event"] == "vanished" or row["node_id"] not in found["current"]
            else cluster_url(tree.part, row["node_id"], names=names)
        )
    return {
        "part": tree.part,
        "names": names,
        "tree": tree,
        "choices": choices,
        "since": since,
        "level": level,
        "event": event,
        "runs": earlier,
        "attention": attention,
        "edit_url": curation.edit_url(tree.part, None, names=names),
        **found,
    }


@endpoint()
def changes_page(request: Request) -> Response:
    return page(request, "changes.html", error=None, **_changes(request))


@endpoint(as_json=True)
def changes_json(request: Request) -> Response:
    found = _changes(request)
    return ExactJSON(
        {
            "dataset": found["part"].dataset,
            "run_config": found["part"].run_config,
            "since": found["since"],
            "run": found["run"],
            "previous_run": found["previous_run"],
            "counts": found["counts"],
            "changes": found["rows"],
            "attention": [
                {k: v for k, v in row.items() if k != "nodes"} for row in found["attention"]
            ],
        }
    )


# --- edits ---------------------------------------------------------------------------------------


async def edit_page(request: Request) -> Response:
    """POST `.../c/{node_id}/edit` (a cluster page's forms) or `.../edit` (an undo on the
    changes page): the edit made, then that page again (303), or the page with the refusal's
    one line (400; nothing changed)."""
    return await curation.posted(request, _edit_page, as_json=False)


@endpoint()
def _edit_page(request: Request, body: bytes) -> Response:
    names, node_id = _names(request), request.path_params.get("node_id")
    state = request.app.state
    try:
        wanted = curation.form_request(request, body, node_id, state.author)
        part, made = curation.save(state.database, *_where(request), wanted)
    except Failure as err:
        if err.status != 400:
            raise
        if node_id is None:
            return page(request, "changes.html", status=400, error=err.message, **_changes(request))
        return _cluster_answer(request, 400, err.message)
    if node_id is None:
        return RedirectResponse(part_url(part, "/changes", names=names), status_code=303)
    shown = curation.landing(made, node_id)
    if shown is None:
        return RedirectResponse(part_url(part, names=names), status_code=303)
    page_no = request.query_params.get("page") if shown == node_id else None
    return RedirectResponse(cluster_url(part, shown, names=names, page=page_no), status_code=303)


async def edit_json(request: Request) -> Response:
    """POST `.../api/edit` with a JSON edit ({kind, node_id, value, text_ids, note}): the edit
    made, or {"error": line} with 400 (nothing changed)."""
    return await curation.posted(request, _edit_json, as_json=True)


@endpoint(as_json=True)
def _edit_json(request: Request, body: bytes) -> Response:
    state = request.app.state
    wanted = curation.json_request(request, body, state.author)
    part, made = curation.save(state.database, *_where(request), wanted)
    return ExactJSON(curation.edit_view(part, made, _names(request)))
