"""The curated state of a partition, rewritten after every edit and every publication (in the
same transaction): its trees with the edits in force applied (`curated_hierarchy`, one per
alias), the texts people moved (`curated_moves`), and how each edit stands against the published
version (`edit_status`): applied, undone, or needing attention, with where its texts are now."""

import json

import polars as pl

from ..results.reading import KEYWORD_NAMES, machine_nodes, summary_aliases
from ..storage.store import SCHEMA, Partition, registered, relation, visible_version
from .apply import Curated, apply_edits
from .edits import Edit, active
from .records import read_edits, write_status

HOLDERS = 5  # clusters listed where an edit's texts are now


def refresh(conn, part: Partition) -> pl.DataFrame | None:
    """Rewrite the partition's curated state from its published results and edits; each edit's
    status (None: nothing published, or nothing edited). Call inside a transaction."""
    part = Partition(part.dataset, part.run_config)
    where = [part.dataset, part.run_config]
    for table in ("curated_hierarchy", "curated_moves"):
        conn.execute(f"DELETE FROM {SCHEMA}.{table} WHERE dataset = ? AND run_config = ?", where)
    version = visible_version(conn, "hierarchy", part)
    edits = read_edits(conn, part)
    if version is None or not edits:
        return None
    leaves = finest_texts(conn, part)
    in_force = active(edits)
    canonical = None
    for alias in [KEYWORD_NAMES] + [a for a in summary_aliases(conn, part) if a != KEYWORD_NAMES]:
        _, nodes = machine_nodes(conn, part, alias)
        curated = apply_edits(nodes, leaves, in_force)
        _write_tree(conn, part, alias, version, curated.nodes)
        if alias == KEYWORD_NAMES:
            canonical = curated
            _write_moves(conn, part, version, nodes, curated)
    status = _status(conn, part, edits, canonical)
    write_status(conn, part, version, status)
    return status


def finest_texts(conn, part: Partition) -> pl.DataFrame:
    """row_idx, text_hash and the machine's cluster_id of every text at the finest level."""
    return conn.execute(
        f"SELECT row_idx, text_hash, cluster_id FROM {relation(conn, 'assignments', part)} "
        "QUALIFY level = max(level) OVER () ORDER BY row_idx"
    ).pl()


def _write_tree(conn, part: Partition, alias: str, version: str, nodes: pl.DataFrame) -> None:
    with registered(conn, "_rows", nodes):
        conn.execute(
            f"INSERT INTO {SCHEMA}.curated_hierarchy BY NAME "
            "SELECT ? AS dataset, ? AS run_config, ? AS alias, ? AS version, * FROM _rows",
            [part.dataset, part.run_config, alias, version],
        )


def _write_moves(conn, part, version: str, nodes: pl.DataFrame, curated: Curated) -> None:
    finest = nodes.filter(pl.col("level") == pl.col("level").max())["level_name"][0]
    with registered(conn, "_rows", curated.moved):
        conn.execute(
            f"INSERT INTO {SCHEMA}.curated_moves SELECT ?, ?, ?, ?, row_idx, cluster_id FROM _rows",
            [part.dataset, part.run_config, version, finest],
        )


def _status(conn, part: Partition, edits: list[Edit], curated: Curated) -> pl.DataFrame:
    """Per edit: applied, undone (or an undo: applied) or needs_attention with the reason and
    the clusters that hold its texts now."""
    undone = {e.value["edit"] for e in edits if e.kind == "undo"}
    rows = []
    for edit in edits:
        if edit.edit_id in undone:
            rows.append((edit.edit_id, "undone", None, None))
        elif edit.edit_id in curated.unapplied:
            holders = _holders(conn, part, edit, curated.nodes)
            reason = curated.unapplied[edit.edit_id]
            rows.append((edit.edit_id, "needs_attention", reason, json.dumps(holders)))
        else:
            rows.append((edit.edit_id, "applied", None, None))
    return pl.DataFrame(
        rows,
        schema={
            "edit_id": pl.Int64,
            "status": pl.String,
            "reason": pl.String,
            "holders": pl.String,
        },
        orient="row",
    )


def _holders(conn, part: Partition, edit: Edit, nodes: pl.DataFrame) -> list[dict]:
    """The clusters, at the edit's level, holding most of the texts its nodes held (or it
    moved) when it was made: node_id, name, texts, share (of those still here)."""
    role = "moved" if edit.kind in ("move_texts", "split") else "member"
    counts = conn.execute(
        f"""
        SELECT a.cluster_id, count(DISTINCT a.text_hash) AS texts
        FROM {relation(conn, "assignments", part)} a
        SEMI JOIN (SELECT text_hash FROM {SCHEMA}.edit_texts WHERE edit_id = ? AND role = ?) e
          USING (text_hash)
        WHERE a.level_name = ?
        GROUP BY a.cluster_id ORDER BY texts DESC, a.cluster_id
        """,
        [edit.edit_id, role, edit.level_name],
    ).pl()
    total = int(counts["texts"].sum()) if counts.height else 0
    names = dict(zip(nodes["node_id"], nodes["name"], strict=True))
    return [
        {
            "node_id": f"{edit.level_name}/{cluster}",
            "name": names.get(f"{edit.level_name}/{cluster}"),
            "texts": texts,
            "share": round(texts / total, 3),
        }
        for cluster, texts in counts.head(HOLDERS).iter_rows()
    ]
