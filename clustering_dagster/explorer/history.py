"""Change reports and size histories as the explorer shows them (read by
`core.results.changes`): what changed in a partition since a run, a cluster's size over runs as a
small chart, and what happened to it in the latest clustering."""

import polars as pl

from ..core.results.changes import changes, size_history
from ..core.storage.store import Partition
from .reads import cluster_url

CHART_WIDTH, CHART_HEIGHT, CHART_PAD = 320, 90, 14
EVENTS = ("new", "kept", "split", "merged", "vanished")


def node_sizes(conn, part: Partition, node: dict) -> list[dict]:
    """The node's size in every clustering that reported it, oldest first (none for an
    LLM-named parent, which no clustering reports)."""
    return size_history(conn, part, node["level_name"], node["cluster_id"]).to_dicts()


def node_change(conn, part: Partition, node: dict, names: str | None) -> dict | None:
    """The node's row of the latest change report, with links to the clusters it came from."""
    report = changes(conn, part).filter(
        (pl.col("level_name") == node["level_name"]) & (pl.col("cluster_id") == node["cluster_id"])
    )
    if report.height == 0:
        return None
    row = report.row(0, named=True)
    row["previous"] = [
        {
            "node_id": f"{node['level_name']}/{cluster}",
            "url": cluster_url(part, f"{node['level_name']}/{cluster}", names=names),
        }
        for cluster in row["previous_cluster_ids"] or []
    ]
    return row


def size_chart(sizes: list[dict]) -> dict | None:
    """An SVG line chart of sizes over runs: the points' coordinates in a viewBox of
    CHART_WIDTH x CHART_HEIGHT, each with its run and size; None with no size recorded."""
    if not sizes:
        return None
    top = max(max(row["size"] for row in sizes), 1)
    inner_w, inner_h = CHART_WIDTH - 2 * CHART_PAD, CHART_HEIGHT - 2 * CHART_PAD
    step = inner_w / max(len(sizes) - 1, 1)
    points = [
        {
            "x": round(CHART_PAD + (i * step if len(sizes) > 1 else inner_w / 2), 1),
            "y": round(CHART_PAD + inner_h * (1 - row["size"] / top), 1),
            "size": row["size"],
            "share": row["share"],
            "event": row["event"],
            "run": row["dagster_run_id"],
            "at": row["recorded_at"],
        }
        for i, row in enumerate(sizes)
    ]
    return {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "line": " ".join(f"{p['x']},{p['y']}" for p in points),
        "points": points,
        "top": top,
        "base": CHART_HEIGHT - CHART_PAD,
    }


def partition_changes(
    conn, tree, since: str | None, level: str | None = None, event: str | None = None
) -> dict:
    """The change report of the partition's latest clustering (or of the one after run
    `since`): counts per level and event, and the rows (emerging first), each with the cluster's
    node id and its name now (else its name before); `level` and `event` keep some rows."""
    report = changes(conn, tree.part, since)
    names = dict(zip(tree.nodes["node_id"], tree.nodes["name"], strict=True))
    rows = report.with_columns(
        node_id=pl.format("{}/{}", "level_name", "cluster_id"),
    ).to_dicts()
    for row in rows:
        row["name"] = names.get(row["node_id"]) or row["previous_label"] or ""
    counts = (
        report.group_by("level", "level_name", "event").agg(clusters=pl.len()).sort("level")
        if report.height
        else None
    )
    table = []
    if counts is not None:
        for (level_name,), group in counts.group_by("level_name", maintain_order=True):
            per = dict(zip(group["event"], group["clusters"], strict=True))
            table.append({"level_name": level_name} | {e: per.get(e, 0) for e in EVENTS})
    shown = [
        row
        for row in rows
        if (level is None or row["level_name"] == level)
        and (event is None or row["event"] == event)
    ]
    return {
        "rows": shown,
        "all_rows": len(rows),
        "counts": table,
        "events": EVENTS,
        "emerging": sum(1 for row in rows if row["emerging"]),
        "current": set(names),
        "run": report["dagster_run_id"][0] if report.height else None,
        "previous_run": report["previous_run_id"][0] if report.height else None,
        "recorded_at": report["recorded_at"][0] if report.height else None,
    }
