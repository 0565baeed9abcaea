"""Publishing a run's results: a partition switches from one complete result to the next at once.

A run's stages write rows under the run's version (`storage.write_version`) and note what they
wrote in `staged`. When the last asset the run selected has written, the run publishes: in one
transaction it points the partition's tables at its version, withdraws the tables computed from
inputs it replaced (so no reader sees new texts beside old clusters), and deletes the rows no
reader or live run can see any more. A run that dies before that publishes nothing.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

from ..pipeline import INPUTS
from .store import HISTORY, SCHEMA, STORE, VERSIONED, Partition


@dataclass(frozen=True)
class Publication:
    version: str
    tables: list[str]
    withdrawn: list[str]


def downstream(tables: set[str]) -> set[str]:
    """Every table computed, directly or not, from one of `tables`."""
    found: set[str] = set()
    frontier = set(tables)
    while frontier:
        frontier = {t for t, inputs in INPUTS.items() if inputs & frontier} - found
        found |= frontier
    return found


def mark_written(conn, part: Partition, asset: str, tables: list[str]) -> None:
    """Note that the run's `asset` wrote `tables` (call in the transaction that wrote them)."""
    conn.execute(
        f"DELETE FROM {STORE}.staged WHERE dataset = ? AND run_config = ? AND version = ? "
        "AND asset = ?",
        [part.dataset, part.run_config, part.version, asset],
    )
    conn.execute(
        f"INSERT INTO {STORE}.staged VALUES (?, ?, ?, ?, ?, ?)",
        [part.dataset, part.run_config, part.version, asset, tables, _now()],
    )


def publish_if_complete(
    conn, part: Partition, run_assets: set[str], live_versions: set[str]
) -> Publication | None:
    """Publish the run's version once every asset in `run_assets` has written (call inside the
    transaction of the last write); rows of versions outside `live_versions` that no reader sees
    are deleted. Returns what was published, or None while assets are still to come."""
    written = conn.execute(
        f"SELECT asset, tables FROM {STORE}.staged "
        "WHERE dataset = ? AND run_config = ? AND version = ?",
        [part.dataset, part.run_config, part.version],
    ).fetchall()
    if not run_assets <= {asset for asset, _ in written}:
        return None
    tables = sorted({table for _, names in written for table in names})
    stale = downstream(set(tables)) - set(tables)
    withdrawn = [
        row[0]
        for row in conn.execute(
            f"SELECT table_name FROM {SCHEMA}.published WHERE dataset = ? AND run_config = ? "
            "AND list_contains(?, table_name) ORDER BY table_name",
            [part.dataset, part.run_config, sorted(stale)],
        ).fetchall()
    ]
    conn.execute(
        f"DELETE FROM {SCHEMA}.published WHERE dataset = ? AND run_config = ? "
        "AND list_contains(?, table_name)",
        [part.dataset, part.run_config, tables + withdrawn],
    )
    now = _now()
    for table in tables:
        conn.execute(
            f"INSERT INTO {SCHEMA}.published VALUES (?, ?, ?, ?, ?)",
            [part.dataset, part.run_config, table, part.version, now],
        )
    conn.execute(
        f"INSERT INTO {SCHEMA}.publications VALUES (?, ?, ?, ?, ?, ?)",
        [part.dataset, part.run_config, part.version, tables, withdrawn, now],
    )
    clean_up(conn, part, live_versions - {part.version})
    return Publication(part.version, tables, withdrawn)


def clean_up(conn, part: Partition, live_versions: set[str]) -> None:
    """Delete the partition's rows that no reader sees and no live run is writing."""
    keep = sorted(live_versions)
    for table in VERSIONED:
        if table in HISTORY:
            seen = (
                f"SELECT version FROM {SCHEMA}.publications WHERE dataset = $1 AND run_config = $2"
            )
        else:
            seen = (
                f"SELECT version FROM {SCHEMA}.published WHERE dataset = $1 AND run_config = $2 "
                f"AND table_name = '{table}'"
            )
        conn.execute(
            f"DELETE FROM {STORE}.{table} WHERE dataset = $1 AND run_config = $2 "
            f"AND NOT list_contains($3, version) AND version NOT IN ({seen})",
            [part.dataset, part.run_config, keep],
        )
    conn.execute(
        f"DELETE FROM {STORE}.staged WHERE dataset = $1 AND run_config = $2 "
        "AND NOT list_contains($3, version)",
        [part.dataset, part.run_config, keep],
    )


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
