"""What the explorer's pages read, and how a failure becomes an answer.

Every request opens one short read-only connection (`core.results.reading.read_only`), reads
through the functions of `core.results` and closes it, so runs keep writing between requests. In
this process, an edit's read-write connection and the reads take turns (`Gate`): DuckDB opens no
read-write connection to a file that a read-only one holds in the same process, nor the reverse.
`Failure` carries the HTTP status and the one line a person sees: an unknown dataset, run
configuration, alias or cluster is 404 with the line the CLI prints; a results file that is gone,
locked or not a results file is 503.
"""

import contextlib
import functools
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import quote, urlencode

import duckdb
import numpy as np
import polars as pl

from ..commands.output import visible
from ..core.embedding.embed import cache_key
from ..core.errors import InputError
from ..core.results.browse import is_folded
from ..core.results.map_page import MapData, map_data, top_traces
from ..core.results.reading import (
    LOCK_WAIT_S,
    NamedTree,
    load_tree,
    partitions,
    read_only,
    resolve,
)
from ..core.results.search import Searcher, search_clusters, search_texts
from ..core.results.search_index import embedding_config, input_versions
from ..core.storage.store import DatabaseBusy, MissingResult, Partition, visible_version


class Failure(Exception):
    """An answer other than the page: `status` and one line for people."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = one_line(message)


def one_line(message: str) -> str:
    """A message as the CLI prints it after `error: `: one line, control characters escaped."""
    return visible(" ".join(str(message).split()))


def failure(err: BaseException) -> Failure:
    """The answer for an exception from reading the results."""
    if isinstance(err, Failure):
        return err
    if isinstance(err, (InputError, MissingResult)):
        return Failure(404, str(err))
    if isinstance(err, (DatabaseBusy, duckdb.IOException)):
        return Failure(503, str(err))
    return Failure(500, f"unexpected {type(err).__name__}: {err} (the server's log says more)")


class Gate:
    """Many readers or one writer of the results file at a time, in this process: a writer waits
    for the readers and any other writer, and new readers wait (up to `wait_s`, then 503) while a
    writer waits or writes. A thread that already reads may read again without waiting."""

    def __init__(self, wait_s: float = LOCK_WAIT_S):
        self._wait_s = wait_s
        self._changed = threading.Condition()
        self._readers = 0
        self._writers = 0  # waiting or writing
        self._writing = False
        self._mine = threading.local()

    @contextmanager
    def reading(self) -> Iterator[None]:
        depth = getattr(self._mine, "depth", 0)
        with self._changed:
            if not depth and not self._changed.wait_for(lambda: not self._writers, self._wait_s):
                raise Failure(503, "an edit is being saved to the results file; try again")
            self._readers += 1
        self._mine.depth = depth + 1
        try:
            yield
        finally:
            self._mine.depth = depth
            with self._changed:
                self._readers -= 1
                self._changed.notify_all()

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self._changed:
            self._writers += 1
            self._changed.wait_for(lambda: not self._readers and not self._writing)
            self._writing = True
        try:
            yield
        finally:
            with self._changed:
                self._writing = False
                self._writers -= 1
                self._changed.notify_all()


@functools.cache
def gate(database: Path) -> Gate:
    """The process's one gate of the results file `database`."""
    return Gate()


@contextmanager
def connection(database: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short read-only connection; a file that is gone, locked or holds no results is 503."""
    with gate(Path(database)).reading():
        stack = ExitStack()
        try:
            conn = stack.enter_context(read_only(database))
        except (InputError, duckdb.Error) as err:
            raise Failure(503, str(err)) from None
        with stack:
            yield conn


@contextmanager
def partition(
    database: Path, dataset: str, run_config: str, names: str | None
) -> Iterator[tuple[duckdb.DuckDBPyConnection, NamedTree]]:
    """A connection and the partition's tree named by `names` (an alias, `keywords`, or None:
    as the CLI chooses); unknown names are 404 with the CLI's line."""
    with connection(database) as conn:
        part = resolve(conn, dataset, run_config)
        yield conn, load_tree(conn, part, names)


# --- addresses ---------------------------------------------------------------------------------

HOSTS = ["127.0.0.1", "localhost"]  # the only host names the explorer answers to


def part_url(part: Partition, suffix: str = "", **query) -> str:
    """The address of a partition's page (`suffix`: `/map`, `/c/fine/3`, ...), with the query
    parameters that are set."""
    path = f"/p/{quote(part.dataset, safe='')}/{quote(part.run_config, safe='')}{suffix}"
    query = {k: v for k, v in query.items() if v is not None and v != ""}
    return path + ("?" + urlencode(query) if query else "")


def cluster_url(part: Partition, node_id: str, **query) -> str:
    return part_url(part, "/c/" + quote(node_id, safe="/"), **query)


def node_view(part: Partition, node: dict, names: str | None, within: int | None = None) -> dict:
    """A node as pages and JSON show it: `bar` is its size in percent of `within` (its parent's
    size, or for the top level the partition's texts)."""
    base = within or node["size"] or 1
    return {
        "node_id": node["node_id"],
        "parent_id": node["parent_id"],
        "level": node["level"],
        "level_name": node["level_name"],
        "cluster_id": node["cluster_id"],
        "name": node["name"] or "",
        "summary": node["summary"] or "",
        "keywords": list(node["keywords"] or []),
        "size": node["size"],
        "share": node["share"],
        "n_children": node["n_children"],
        "method": node["method"],
        "folded": is_folded(node),
        "named_by": node["named_by"],
        "placed_by": node["placed_by"],
        "tags": list(node["tags"] or []),
        "flag": node["flag"],
        "bar": round(100 * node["size"] / base, 1),
        "url": cluster_url(part, node["node_id"], names=names),
    }


def children_views(tree: NamedTree, node_id: str | None, names: str | None) -> list[dict]:
    """The node's children (None: the top level), largest first as the tree orders them."""
    if node_id is None:
        rows = tree.nodes.filter(pl.col("level") == 0)
        within = int(rows["size"].sum())
    else:
        within = tree.node(node_id)["size"]
        rows = tree.children(node_id)
    return [node_view(tree.part, row, names, within) for row in rows.iter_rows(named=True)]


# --- search --------------------------------------------------------------------------------------


class LockedEncoder:
    """A query encoder used by one thread at a time (the model loads once, on first use)."""

    def __init__(self, encoder):
        self._encoder = encoder
        self._lock = threading.Lock()

    def __call__(self, config, texts: list[str]) -> np.ndarray:
        with self._lock:
            return self._encoder(config, texts)


class SearchService:
    """One `Searcher` per process (it keeps the query models and each partition's index). Its
    indexes are read and scanned by one request at a time, and its model used by one at a time,
    so a typical-texts scan need not wait for the model to load. `load_models` loads the file's
    query models before the server answers (loading torch in the background would hold the
    interpreter for seconds and slow every page meanwhile); `warm` reads a partition's index in
    the background when its tree is shown, so that the first search is as fast as the next."""

    def __init__(self, database: Path, searcher: Searcher | None = None):
        self.searcher = searcher or Searcher(database)
        self.searcher.encoder = LockedEncoder(self.searcher.encoder)
        self._lock = threading.Lock()  # the indexes and their in-memory scans
        self._warming = threading.Lock()
        self._warming_now: set = set()
        self._scanned: dict = {}  # (part, alias) -> the index scanned once

    def load_models(self) -> list[str]:
        """Load the query model of every partition in the file (usually one model); the models
        loaded. A file that cannot be read yet loads none: the first search loads its own."""
        configs = {}
        with (
            contextlib.suppress(InputError, duckdb.Error),
            read_only(self.searcher.database) as conn,
        ):
            for dataset, run_config in partitions(conn).select("dataset", "run_config").rows():
                with contextlib.suppress(InputError):
                    config = embedding_config(conn, Partition(dataset, run_config))
                    configs[cache_key(config)] = config
        for config in configs.values():
            self.searcher.encoder(config, ["warm up"])
        return list(configs)

    def ready(self, conn, part: Partition, alias: str | None) -> bool:
        """Whether the partition's current index is in memory, scanned once (a query then scans
        memory only, quickly)."""
        current = self.searcher.current(conn, part, alias)
        return current is not None and self._scanned.get((part, alias)) is current

    def _index(self, part: Partition, alias: str | None):
        with gate(self.searcher.database).reading(), self._lock:
            index = self.searcher.index(part, alias)
            if self._scanned.get((part, alias)) is not index:
                _first_scans(index)
                self._scanned[part, alias] = index
        return index

    def warm(self, part: Partition, alias: str | None) -> None:
        """Read the partition's index in the background, unless that is under way (a current
        index is only checked: a lookup per table)."""
        key = (part, alias)
        with self._warming:
            if key in self._warming_now:
                return
            self._warming_now.add(key)
        _background(self._warm, part, alias)

    def _warm(self, part: Partition, alias: str | None) -> None:
        try:
            self._index(part, alias)
        finally:
            with self._warming:
                self._warming_now.discard((part, alias))

    def search(
        self, part: Partition, alias: str | None, query: str, within: str | None, limit: int
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """The clusters and texts nearest `query` (inside the node `within`)."""
        index = self._index(part, alias)
        if within is not None:
            index.tree.node(within)
        vector = self.searcher.embed(index, query)
        with self._lock:
            clusters = search_clusters(index, vector, limit, within)
            texts = search_texts(index, vector, limit, within)
        return clusters, texts  # never the folded node: it has no centroid (tree_centroids)

    def typical(
        self, part: Partition, alias: str | None, node_id: str, centroid: np.ndarray, limit: int
    ) -> list[dict]:
        """The node's `limit` distinct texts nearest its centroid, from the index in memory (the
        same ranking as `node_texts`, without scanning every stored vector of the file)."""
        index = self._index(part, alias)
        with self._lock:
            hits = search_texts(index, centroid, limit, node_id)
        return hits.select("row_idx", "text_id", "text", similarity="score").to_dicts()


def _first_scans(index) -> None:
    """Two scans inside a node, as a page asks: the first two of a new index take 0.4-0.5 s each
    on 100,000 texts (DuckDB's memory warming up), the next ones about 0.1 s."""
    centroid = index.memory.execute("SELECT vector FROM centroids LIMIT 1").fetchone()
    if centroid is None:
        return
    for node_id in index.tree.nodes["node_id"].head(2):
        search_texts(index, np.asarray(centroid[0], np.float32), 1, node_id)


def _background(work, *args) -> None:
    """Run `work` in a daemon thread; a failure is left to the request that needs it to report."""

    def run():
        with contextlib.suppress(Exception):
            work(*args)

    threading.Thread(target=run, daemon=True).start()


# --- the map -----------------------------------------------------------------------------------

LABEL_CANDIDATES = 200  # names offered to the page, largest first; it places what fits


def _plotly_text(text: str) -> str:
    """Text for plotly's labels (which read a little HTML), control characters shown."""
    return visible(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class MapCache:
    """The map's data per partition and names, read again only when a run publishes anew."""

    def __init__(self, size: int = 4):
        self._size = size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, conn, part: Partition, names: str | None) -> dict:
        versions = (*input_versions(conn, part), visible_version(conn, "projections", part))
        key = (part, names)
        with self._lock:
            cached = self._items.get(key)
            if cached is not None and cached[0] == versions:
                self._items.move_to_end(key)
                return cached[1]
        payload = map_payload(map_data(conn, part, names), names)
        with self._lock:
            self._items[key] = (versions, payload)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return payload


def _medians(points: pl.DataFrame, column: str) -> pl.DataFrame:
    return points.group_by(column).agg(
        x=pl.col("x").median(), y=pl.col("y").median(), points=pl.len()
    )


def map_payload(data: MapData, names: str | None) -> dict:
    """Points per top cluster (position, hover, finest cluster), and label candidates (the
    first two levels, largest first, each at the median of its points)."""
    part, tree, points = data.part, data.tree, data.points
    traces = [
        trace | {"hover": [visible(h) for h in mine["hover"]], "node": mine["leaf"].to_list()}
        for _, mine, trace in top_traces(data)
    ]
    placed = [_medians(points, "top").rename({"top": "node_id"})]
    if "node_1" in points.columns:
        placed.append(_medians(points, "node_1").rename({"node_1": "node_id"}))
    nodes = tree.nodes.join(pl.concat(placed), on="node_id").filter(pl.col("level") < 2)
    labels = [
        {
            "node_id": node["node_id"],
            "text": _plotly_text(node["name"] or node["node_id"]),
            "x": round(node["x"], 4),
            "y": round(node["y"], 4),
            "size": node["size"],
            "level": node["level"],
        }
        for node in nodes.sort(["size", "level"], descending=[True, False])
        .head(LABEL_CANDIDATES)
        .iter_rows(named=True)
    ]
    return {
        "traces": traces,
        "labels": labels,
        "total": points.height,
        "names": tree.names,
        "cluster_base": cluster_url(part, ""),
        "query": "" if names is None else "?" + urlencode({"names": names}),
    }
