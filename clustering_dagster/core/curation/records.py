"""Reading and writing the edits of a partition (tables `edits`, `edit_texts`, `edit_status`)."""

import json
from datetime import UTC, datetime

import duckdb
import polars as pl

from ..storage.store import SCHEMA, Partition, registered
from .edits import Edit, describe, named_nodes


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def read_edits(conn, part: Partition) -> list[Edit]:
    """Every edit of the partition, undos included, in the order they were made."""
    rows = conn.execute(
        f"SELECT edit_id, kind, level_name, cluster_id, value, author, note, made_at, made_on "
        f"FROM {SCHEMA}.edits WHERE dataset = ? AND run_config = ? ORDER BY edit_id",
        [part.dataset, part.run_config],
    ).fetchall()
    if not rows:
        return []
    moved = conn.execute(
        f"SELECT edit_id, list(text_hash ORDER BY text_hash) FROM {SCHEMA}.edit_texts "
        "WHERE role = 'moved' AND list_contains(?, edit_id) GROUP BY edit_id",
        [[row[0] for row in rows]],
    ).fetchall()
    texts = dict(moved)
    return [
        Edit(
            edit_id=edit_id,
            kind=kind,
            level_name=level_name,
            cluster_id=cluster_id,
            value=json.loads(value),
            author=author,
            note=note,
            made_at=made_at,
            made_on=made_on,
            texts=tuple(texts.get(edit_id, ())),
        )
        for edit_id, kind, level_name, cluster_id, value, author, note, made_at, made_on in rows
    ]


def next_edit_id(conn) -> int:
    return conn.execute(f"SELECT coalesce(max(edit_id), 0) + 1 FROM {SCHEMA}.edits").fetchone()[0]


def write_edit(
    conn, part: Partition, edit: Edit, moved: pl.Series | None, members: pl.Series | None
) -> None:
    """The edit's row, the hashes of the texts it moves and of the named nodes' texts (to say,
    should those nodes vanish, where their texts went); call inside a transaction."""
    conn.execute(
        f"INSERT INTO {SCHEMA}.edits VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            edit.edit_id,
            part.dataset,
            part.run_config,
            edit.kind,
            edit.level_name,
            edit.cluster_id,
            edit.node_id,
            json.dumps(edit.value, ensure_ascii=False),
            edit.author,
            edit.note,
            edit.made_at,
            edit.made_on,
        ],
    )
    for role, hashes in (("moved", moved), ("member", members)):
        if hashes is None or hashes.len() == 0:
            continue
        with registered(conn, "_rows", pl.DataFrame({"text_hash": hashes.unique().sort()})):
            conn.execute(
                f"INSERT INTO {SCHEMA}.edit_texts SELECT ?, ?, text_hash FROM _rows",
                [edit.edit_id, role],
            )


def write_status(conn, part: Partition, version: str, status: pl.DataFrame) -> None:
    """Each edit's standing against the published `version` (edit_id, status, reason, holders),
    replacing what was said of that version; call inside a transaction."""
    conn.execute(
        f"DELETE FROM {SCHEMA}.edit_status WHERE dataset = ? AND run_config = ? AND version = ?",
        [part.dataset, part.run_config, version],
    )
    with registered(conn, "_rows", status):
        conn.execute(
            f"INSERT INTO {SCHEMA}.edit_status SELECT ?, ?, ?, edit_id, status, reason, "
            "holders::JSON, ? FROM _rows",
            [part.dataset, part.run_config, version, now()],
        )


def latest_status(conn, part: Partition) -> pl.DataFrame:
    """Each edit's standing against the partition's last checked version: edit_id, status
    (applied, needs_attention, undone), reason, holders (JSON), version."""
    return conn.execute(
        f"""
        SELECT s.edit_id, s.status, s.reason, s.holders, s.version, s.checked_at
        FROM {SCHEMA}.edit_status s
        WHERE s.dataset = $1 AND s.run_config = $2 AND s.checked_at = (
            SELECT max(checked_at) FROM {SCHEMA}.edit_status WHERE dataset = $1 AND run_config = $2
        )
        ORDER BY s.edit_id
        """,
        [part.dataset, part.run_config],
    ).pl()


def status_history(conn, part: Partition, edit_ids: list[int]) -> pl.DataFrame:
    """How the edits stood against every version checked, oldest first."""
    return conn.execute(
        f"SELECT edit_id, version, status, reason, holders, checked_at FROM {SCHEMA}.edit_status "
        "WHERE dataset = ? AND run_config = ? AND list_contains(?, edit_id) "
        "ORDER BY checked_at, edit_id",
        [part.dataset, part.run_config, edit_ids],
    ).pl()


def edit_log(conn, part: Partition) -> pl.DataFrame:
    """Every edit of the partition, oldest first, with how it stands against the last version
    checked and the undo that undid it: edit_id, kind, node_id, value, texts (how many it
    moves), author, note, made_at, made_on, status, reason, holders, undone_by."""
    return conn.execute(
        f"""
        WITH latest AS (
            SELECT * FROM {SCHEMA}.edit_status WHERE dataset = $1 AND run_config = $2
            QUALIFY checked_at = max(checked_at) OVER ()
        ), moved AS (
            SELECT edit_id, count(*) AS texts FROM {SCHEMA}.edit_texts
            WHERE role = 'moved' AND edit_id IN (
                SELECT edit_id FROM {SCHEMA}.edits WHERE dataset = $1 AND run_config = $2
            )
            GROUP BY edit_id
        ), undos AS (
            SELECT CAST(value->>'edit' AS BIGINT) AS undone, edit_id AS undone_by
            FROM {SCHEMA}.edits WHERE dataset = $1 AND run_config = $2 AND kind = 'undo'
        )
        SELECT e.edit_id, e.kind, e.node_id, e.value, coalesce(m.texts, 0) AS texts, e.author,
               e.note, e.made_at, e.made_on, s.status, s.reason, s.holders, u.undone_by
        FROM {SCHEMA}.edits e
        LEFT JOIN latest s USING (edit_id)
        LEFT JOIN moved m USING (edit_id)
        LEFT JOIN undos u ON u.undone = e.edit_id
        WHERE e.dataset = $1 AND e.run_config = $2
        ORDER BY e.edit_id
        """,
        [part.dataset, part.run_config],
    ).pl()


def edit_history(conn, part: Partition) -> list[dict]:
    """`edit_log` for people: its rows with the value and holders read, what each edit does in
    words (`what`) and the nodes it names (`nodes`); none for a file older than curation."""
    try:
        log = edit_log(conn, part)
    except duckdb.CatalogException:
        return []
    rows = []
    for row in log.iter_rows(named=True):
        value = json.loads(row["value"])
        rows.append(
            row
            | {
                "value": value,
                "holders": json.loads(row["holders"]) if row["holders"] else [],
                "what": describe(row["kind"], row["node_id"], value, row["texts"]),
                "nodes": named_nodes(row["kind"], row["node_id"], value),
            }
        )
    return rows
