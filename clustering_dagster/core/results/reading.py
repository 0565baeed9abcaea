"""Reading published results for people: partitions, runs, named trees, the texts of a cluster.

Outside a run everything is read through the views of schema `clustering` (published rows only)
on short read-only connections. The tree and the per-text names go through `read_partition`, so
the map asset, inside a run, reads its own run's version the same way.

A cluster is named on the command line by its node id, `<level_name>/<cluster_id>`: `fine/12`,
`coarse/0`, or in an LLM-merged tree `parent_1/3`.
"""

import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from ..curation.apply import CURATION_SCHEMA, MOVED_SCHEMA, machine_tree
from ..errors import InputError
from ..storage.lake import Lake
from ..storage.store import (
    HIDDEN_ID,
    SCHEMA,
    Partition,
    read_partition,
    relation,
    shown_relation,
    store_table,
)

# The names of the tree when no LLM alias exists: the keyword labels of `hierarchy`.
KEYWORD_NAMES = "keywords"

TREE_COLUMNS = [
    "node_id", "parent_id", "level", "level_name", "cluster_id", "size", "share", "n_children",
    "name", "summary", "keywords", "position", "method",
]  # fmt: skip

LOCK_WAIT_S = 10.0


def vector_sql(vector: np.ndarray) -> str:
    """A FLOAT[d] literal of `vector`, exact to float32 (DuckDB's Python driver takes ~0.3 s to
    bind a 384-float list parameter; parsing this takes well under a millisecond)."""
    values = ",".join(f"{x:.9e}" for x in np.asarray(vector, np.float32).tolist())
    return f"[{values}]::FLOAT[{len(vector)}]"


@contextmanager
def read_only(path: Path, wait_s: float = LOCK_WAIT_S) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short read-only connection to the results file; waits up to `wait_s` while a writer
    holds it, then says so in one line. With CLUSTERING_DUCKLAKE set, a connection to the lake
    (`path` unused), which never waits: each query reads the last committed snapshot."""
    lake = Lake.configured()
    if lake is not None:
        with closing(lake.connect()) as conn:
            _check_results(conn, "the lake of CLUSTERING_DUCKLAKE")
            yield conn
        return
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"no results database at {path}: cluster a dataset first (README, Quick start) "
            "or point CLUSTERING_DUCKDB_PATH / --db at one"
        )
    deadline = time.monotonic() + wait_s
    while True:
        try:
            conn = duckdb.connect(str(path), read_only=True)
            break
        except duckdb.IOException as err:
            if "lock" not in str(err).lower():
                raise InputError(f"cannot open {path}: {err}") from None
            if time.monotonic() >= deadline:
                raise InputError(
                    f"{path} is locked by a process writing to it; try again when it is done"
                ) from None
            time.sleep(0.2)
    try:
        _check_results(conn, str(path))
        yield conn
    finally:
        conn.close()


def _check_results(conn, where: str) -> None:
    if not conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? "
        "AND table_name = 'texts'",
        [SCHEMA],
    ).fetchone()[0]:
        raise InputError(f"{where} holds no clustering results (no table {SCHEMA}.texts)")


def partitions(conn) -> pl.DataFrame:
    """Every partition with published results: its texts, levels, finest clusters, last run."""
    return conn.execute(
        f"""
        WITH texts AS (
            SELECT dataset, run_config, count(*) AS texts FROM {SCHEMA}.texts GROUP BY ALL
        ), finest AS (
            SELECT dataset, run_config, count(*) AS clusters FROM {SCHEMA}.hierarchy
            WHERE n_children = 0 GROUP BY ALL
        ), ordered AS (
            SELECT dataset, run_config, list(level_name ORDER BY level) AS levels FROM (
                SELECT DISTINCT dataset, run_config, level, level_name FROM {SCHEMA}.hierarchy
            ) GROUP BY ALL
        ), aliases AS (
            SELECT dataset, run_config, list(DISTINCT alias ORDER BY alias) AS aliases
            FROM {SCHEMA}.merged_hierarchy GROUP BY ALL
        ), runs AS (
            SELECT dataset, run_config, max(materialized_at) AS last_materialized_at
            FROM {SCHEMA}.materializations GROUP BY ALL
        )
        SELECT t.dataset, t.run_config, t.texts, o.levels, f.clusters AS finest_clusters,
               a.aliases, r.last_materialized_at
        FROM texts t
        LEFT JOIN ordered o USING (dataset, run_config)
        LEFT JOIN finest f USING (dataset, run_config)
        LEFT JOIN aliases a USING (dataset, run_config)
        LEFT JOIN runs r USING (dataset, run_config)
        ORDER BY t.dataset, t.run_config
        """
    ).pl()


def _known(conn) -> list[tuple[str, str]]:
    return conn.execute(
        f"SELECT DISTINCT dataset, run_config FROM {SCHEMA}.texts ORDER BY ALL"
    ).fetchall()


def _check_dataset(known: list[tuple[str, str]], dataset: str) -> list[str]:
    """The dataset's run configurations; an unknown dataset is an error listing the known ones."""
    datasets = sorted({d for d, _ in known})
    if dataset not in datasets:
        raise InputError(
            f"no results for dataset {dataset!r} (datasets with results: "
            f"{', '.join(datasets) or 'none'})"
        )
    return [c for d, c in known if d == dataset]


def _check_run_config(configs: list[str], run_config: str, owner: str) -> None:
    if run_config not in configs:
        raise InputError(
            f"{owner} no results for run configuration {run_config!r} "
            f"(it has: {', '.join(sorted(set(configs))) or 'none'})"
        )


def resolve(conn, dataset: str, run_config: str | None = None) -> Partition:
    """The partition named on the command line; without a run configuration, the dataset's only
    one, or `default`. Unknown names end in an error listing the known ones."""
    configs = _check_dataset(_known(conn), dataset)
    if run_config is None:
        if len(configs) == 1:
            return Partition(dataset, configs[0])
        if "default" in configs:
            return Partition(dataset, "default")
        raise InputError(
            f"dataset {dataset!r} has results for run configurations {', '.join(configs)}: "
            "pass --run-config"
        )
    _check_run_config(configs, run_config, f"dataset {dataset!r} has")
    return Partition(dataset, run_config)


def runs(conn, dataset: str | None = None, run_config: str | None = None, limit: int = 20):
    """The latest rows of the `runs` view, newest first; an unknown dataset or run configuration
    is an error, as in `resolve`."""
    known = _known(conn)
    if dataset is not None:
        known = [(dataset, c) for c in _check_dataset(known, dataset)]
    if run_config is not None:
        where = f"dataset {dataset!r} has" if dataset is not None else "the database holds"
        _check_run_config([c for _, c in known], run_config, where)
    return conn.execute(
        f"SELECT * FROM {SCHEMA}.runs WHERE ($1 IS NULL OR dataset = $1) "
        "AND ($2 IS NULL OR run_config = $2) ORDER BY last_materialized_at DESC LIMIT $3",
        [dataset, run_config, limit],
    ).pl()


@dataclass(frozen=True)
class NamedTree:
    """A partition's tree with the names of one alias (`names`), rows in `TREE_COLUMNS` and
    the curation columns (who named and placed each node, its tags, flag and edits), depth-first,
    level 0 at the top; the leaves are the finest clustering level. People's edits are applied:
    `moved` holds the texts whose finest cluster a person changed (row_idx, cluster_id)."""

    part: Partition
    names: str
    nodes: pl.DataFrame
    moved: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=MOVED_SCHEMA))

    def node(self, node_id: str) -> dict:
        row = self.nodes.filter(pl.col("node_id") == node_id)
        if row.height == 0:
            raise InputError(f"no cluster {node_id!r} in {self.part} ({self.describe_ids()})")
        return row.row(0, named=True)

    def describe_ids(self) -> str:
        """How this tree's clusters are named, e.g. 'clusters: coarse/0-8, fine/0-98'."""
        ranges = (
            self.nodes.group_by("level", "level_name")
            .agg(low=pl.col("cluster_id").min(), high=pl.col("cluster_id").max())
            .sort("level")
        )
        return "clusters: " + ", ".join(
            f"{name}/{low}-{high}" for _, name, low, high in ranges.iter_rows()
        )

    @property
    def leaf_level(self) -> str:
        return self.nodes.filter(pl.col("level") == pl.col("level").max())["level_name"][0]

    def children(self, node_id: str) -> pl.DataFrame:
        return self.nodes.filter(pl.col("parent_id") == node_id)

    def ancestors(self, node_id: str) -> list[dict]:
        """The node's parents, nearest first, up to its root."""
        parent = dict(zip(self.nodes["node_id"], self.nodes["parent_id"], strict=True))
        chain, current = [], parent[node_id]
        while current is not None:
            chain.append(self.node(current))
            current = parent[current]
        return chain

    def leaves(self, node_id: str) -> list[int]:
        """Cluster ids at the leaf level under the node (the node itself if it is a leaf)."""
        self.node(node_id)
        chains = self.leaf_chains()
        return chains.filter(pl.any_horizontal(pl.col("^node_\\d+$") == node_id))[
            "cluster_id"
        ].to_list()

    def leaf_chains(self) -> pl.DataFrame:
        """Per leaf: cluster_id and, per depth d, `node_d` and `name_d` from the root down."""
        by_id = {row["node_id"]: row for row in self.nodes.iter_rows(named=True)}
        rows = []
        for leaf in self.nodes.filter(pl.col("level") == pl.col("level").max()).iter_rows(
            named=True
        ):
            chain, current = [], leaf
            while current is not None:
                chain.append(current)
                current = by_id.get(current["parent_id"])
            row = {"cluster_id": leaf["cluster_id"]}
            for depth, node in enumerate(reversed(chain)):
                row[f"node_{depth}"], row[f"name_{depth}"] = node["node_id"], node["name"]
            rows.append(row)
        return pl.DataFrame(rows)

    def level_names(self) -> list[str]:
        return self.nodes.unique("level").sort("level")["level_name"].to_list()


def summary_aliases(conn, part: Partition) -> dict[str, bool]:
    """The partition's aliases in `merged_hierarchy`, each with whether an LLM named it."""
    frame = read_partition(conn, "merged_hierarchy", part, "alias, method", "alias", False)
    return {
        alias: bool((group["method"] == "llm").any())
        for (alias,), group in frame.group_by("alias", maintain_order=True)
    }


def _chosen_alias(part: Partition, aliases: dict[str, bool], alias: str | None) -> str:
    """`alias`, or by default an LLM alias (the first by name) when one exists, else the keyword
    labels; an unknown alias is an error listing the known ones."""
    if alias is None:
        return next((a for a, by_llm in aliases.items() if by_llm), KEYWORD_NAMES)
    if alias != KEYWORD_NAMES and alias not in aliases:
        raise InputError(
            f"no alias {alias!r} in {part} (aliases: {', '.join(aliases) or KEYWORD_NAMES})"
        )
    return alias


def _machine_tree(conn, part: Partition, alias: str, aliases: dict[str, bool]) -> pl.DataFrame:
    if alias == KEYWORD_NAMES and not aliases.get(KEYWORD_NAMES):
        nodes = read_partition(
            conn,
            "hierarchy",
            part,
            "*, label AS name, NULL::VARCHAR AS summary, "
            f"CASE WHEN cluster_id = {HIDDEN_ID} THEN 'privacy' ELSE 'hdbscan' END AS method",
            "position",
        )
    else:
        nodes = read_partition(conn, "merged_hierarchy", part, "*, title AS name", "position")
        nodes = nodes.filter(pl.col("alias") == alias)
    return nodes.select(TREE_COLUMNS)


def machine_nodes(conn, part: Partition, alias: str | None = None) -> tuple[str, pl.DataFrame]:
    """The alias (see `_chosen_alias`) and the machine's tree (`TREE_COLUMNS`) it names."""
    aliases = summary_aliases(conn, part)
    alias = _chosen_alias(part, aliases, alias)
    return alias, _machine_tree(conn, part, alias, aliases)


def _curated_tree(conn, part: Partition, alias: str) -> NamedTree | None:
    """The tree with people's edits as the last edit or publication left it (None: never
    edited, or a file older than curation, opened read-only)."""
    where = [part.dataset, part.run_config]
    try:
        curated = conn.execute(
            f"SELECT {', '.join(TREE_COLUMNS + list(CURATION_SCHEMA))} "
            f"FROM {SCHEMA}.curated_hierarchy WHERE dataset = ? AND run_config = ? "
            "AND alias = ? ORDER BY position",
            [*where, alias],
        ).pl()
    except duckdb.CatalogException:
        return None
    if curated.height == 0:
        return None
    moved = conn.execute(
        f"SELECT row_idx, cluster_id FROM {SCHEMA}.curated_moves "
        "WHERE dataset = ? AND run_config = ? ORDER BY row_idx",
        where,
    ).pl()
    return NamedTree(part, alias, curated, moved.cast(MOVED_SCHEMA))


def load_tree(conn, part: Partition, alias: str | None = None) -> NamedTree:
    """The tree named by `alias` (see `_chosen_alias`) with people's edits applied (inside a
    run: the machine's tree); the machine's tree is read only when nobody edited it."""
    aliases = summary_aliases(conn, part)
    alias = _chosen_alias(part, aliases, alias)
    curated = None if part.version is not None else _curated_tree(conn, part, alias)
    if curated is not None:
        return curated
    return NamedTree(part, alias, machine_tree(_machine_tree(conn, part, alias, aliases)))


def leaf_assignments(conn, tree: NamedTree) -> str:
    """SQL for the finest cluster of each of the partition's texts as people left it (row_idx,
    text_hash, cluster_id, membership, noise)."""
    rows = relation(conn, "assignments", tree.part)
    finest = "'" + tree.leaf_level.replace("'", "''") + "'"
    if tree.moved.height == 0:
        return (
            "(SELECT row_idx, text_hash, cluster_id, membership, noise "
            f"FROM {rows} WHERE level_name = {finest})"
        )
    name = f"_moved_{id(tree.moved)}"
    conn.register(name, tree.moved.to_arrow())
    return (
        "(SELECT a.row_idx, a.text_hash, coalesce(m.cluster_id, a.cluster_id) AS cluster_id, "
        f"a.membership, a.noise FROM {rows} a LEFT JOIN {name} m USING (row_idx) "
        f"WHERE a.level_name = {finest})"
    )


def text_names(conn, tree: NamedTree) -> pl.DataFrame:
    """Per text a person may see (row_idx, text_id, text): its leaf cluster and `node_d`/`name_d`
    at every depth."""
    texts = conn.execute(
        f"SELECT row_idx, text_id, text FROM {shown_relation(conn, 'texts', tree.part)} t "
        "ORDER BY row_idx"
    ).pl()
    leaves = conn.execute(
        f"SELECT row_idx, cluster_id FROM {leaf_assignments(conn, tree)} ORDER BY row_idx"
    ).pl()
    return texts.join(leaves, on="row_idx", how="left", maintain_order="left").join(
        tree.leaf_chains(), on="cluster_id", how="left", maintain_order="left"
    )


def tree_centroids(conn, tree: NamedTree) -> dict[str, np.ndarray]:
    """Every node's unit centroid in embedding space: stored for the clustering levels, the
    size-weighted mean of its leaves' centroids for an LLM-merged parent. The privacy threshold's
    folded node has none: no search or neighbour may point at what it holds."""
    stored = conn.execute(
        f"SELECT level_name, cluster_id, size, centroid FROM {SCHEMA}.cluster_centroids "
        "WHERE dataset = ? AND run_config = ?",
        [tree.part.dataset, tree.part.run_config],
    ).pl()
    found = {
        (level, cluster): (size, np.asarray(vector, np.float32))
        for level, cluster, size, vector in stored.iter_rows()
    }
    chains = tree.leaf_chains()
    leaves = {}
    for depth in range(len(tree.level_names())):
        grouped = chains.group_by(f"node_{depth}").agg("cluster_id")
        leaves |= dict(grouped.iter_rows())
    centroids = {}
    for node_id, level, cluster in tree.nodes.select("node_id", "level_name", "cluster_id").rows():
        if cluster == HIDDEN_ID:
            continue
        if (level, cluster) in found:
            vector = found[level, cluster][1]
        else:  # a merged parent, or a cluster a person made (no stored leaf: no centroid)
            under = leaves.get(node_id, [])
            parts = [found[tree.leaf_level, c] for c in under if (tree.leaf_level, c) in found]
            if not parts:
                continue
            vector = sum(size * leaf_vector for size, leaf_vector in parts)
        centroids[node_id] = vector / max(float(np.linalg.norm(vector)), 1e-12)
    return centroids


def node_texts(
    conn, tree: NamedTree, node_id: str, limit: int | None, only: pl.Series | None = None
) -> pl.DataFrame:
    """The node's texts, the most typical (closest to its centroid) first; `only`: of these
    row_idx. The folded node of the privacy threshold has none to show."""
    centroids = tree_centroids(conn, tree)
    dim = len(next(iter(centroids.values()))) if centroids else 1
    centroid = centroids.get(tree.node(node_id)["node_id"], np.zeros(dim, np.float32))
    part = tree.part
    return conn.execute(
        f"""
        SELECT t.row_idx, t.text_id, t.text,
               array_cosine_similarity(s.embedding, {vector_sql(centroid)}) AS similarity,
               a.noise
        FROM {leaf_assignments(conn, tree)} a
        JOIN {SCHEMA}.texts t ON t.dataset = $dataset AND t.run_config = $run_config
          AND t.row_idx = a.row_idx
        JOIN {SCHEMA}.embeddings e ON e.dataset = $dataset AND e.run_config = $run_config
          AND e.row_idx = a.row_idx
        JOIN {store_table(len(centroid))} s ON s.model = e.model AND s.text_hash = e.text_hash
        WHERE list_contains($ids, a.cluster_id)
          AND ($only::INTEGER[] IS NULL OR list_contains($only::INTEGER[], t.row_idx))
        ORDER BY similarity DESC, t.row_idx
        LIMIT $limit
        """,
        {
            "dataset": part.dataset,
            "run_config": part.run_config,
            "ids": tree.leaves(node_id),
            "only": None if only is None else only.to_list(),
            "limit": limit,
        },
    ).pl()
