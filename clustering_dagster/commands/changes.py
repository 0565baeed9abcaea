"""`clustering-dagster changes`: what changed at a partition's last full clustering, against the
clustering before it (`clustering.cluster_changes`), read-only on a short connection."""

from pathlib import Path

import click
import polars as pl

from ..core.clustering.changes import event_counts, node_id, readable
from ..core.errors import InputError
from ..core.results.changes import changes
from ..core.results.reading import load_tree, read_only, resolve
from ..core.storage.store import MissingResult, Partition
from .curate import print_attention
from .output import alias_option, emit_json, json_option, note, run_config_option, say, show_table


def _names(conn, part: Partition, alias: str | None) -> dict[str, str]:
    """Node id -> name in the published tree (none while the tree is withdrawn)."""
    try:
        tree = load_tree(conn, part, alias)
    except MissingResult:
        return {}
    return dict(tree.nodes.select("node_id", "name").iter_rows())


def _one_level(report: pl.DataFrame, level: str | None, part: Partition) -> pl.DataFrame:
    if level is None or report.height == 0:
        return report
    levels = report.unique("level", maintain_order=True).sort("level")["level_name"].to_list()
    if level not in levels:
        raise InputError(f"no level {level!r} in {part} (levels: {', '.join(levels)})")
    return report.filter(pl.col("level_name") == level)


def _counts_line(counts: dict) -> str:
    events = ("new", "split", "merged", "kept", "vanished", "emerging")
    return f"{counts['level_name']}: " + ", ".join(f"{counts[e]} {e}" for e in events)


@click.command(name="changes")
@click.argument("dataset")
@run_config_option
@click.option(
    "--since", "since_run", default=None, metavar="RUN",
    help="The changes of the clustering after run RUN (its id, or a unique beginning of it); "
    "default: those of the latest clustering.",
)  # fmt: skip
@click.option("--level", default=None, help="Only this level (e.g. fine).")
@alias_option
@json_option
@click.pass_obj
def changes_command(db: Path, dataset, run_config, since_run, level, alias, as_json) -> None:
    """What changed at the last full clustering: per level the clusters new, split, merged and
    vanished, and the size and share of those kept, emerging clusters first; then people's edits
    that no longer apply (`curate attention`)."""
    with read_only(db) as conn:
        part = resolve(conn, dataset, run_config)
        report = _one_level(changes(conn, part, since_run), level, part)
        names = _names(conn, part, alias)
    if as_json:
        rows = []
        for row in report.to_dicts():
            node = node_id(row["level_name"], row["cluster_id"])
            rows.append(row | {"node_id": node, "name": names.get(node) or row["previous_label"]})
        return emit_json(rows)
    if report.height == 0 and since_run:
        note(f"{part}: nothing changed since run {since_run}, its latest clustering")
        return print_attention(db, dataset, run_config)
    if report.height == 0:
        note(f"{part}: no change report yet (each full clustering writes one)")
        return print_attention(db, dataset, run_config)
    run, previous = report["dagster_run_id"][0], report["previous_run_id"][0]
    show_table(
        readable(report, names).to_dicts(),
        [
            ("cluster", "cluster"),
            ("name", "name"),
            ("event", "event"),
            ("texts", "texts>"),
            ("share", "share>"),
            ("change", "change>"),
            ("emerging", "emerging"),
        ],
        title=f"{part}: run {run[:8]} against "
        + (f"run {previous[:8]}" if previous else "nothing (its first clustering)")
        + f", {report['recorded_at'][0]:%Y-%m-%d %H:%M} UTC",
        wrap="name",
    )
    for counts in event_counts(report).iter_rows(named=True):
        say(_counts_line(counts))
    print_attention(db, dataset, run_config)
