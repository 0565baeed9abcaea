"""Commands over the results in the DuckDB file, all read-only on short connections.

A CLUSTER argument is a node id, `<level_name>/<cluster_id>` (`fine/12`, `coarse/0`, or in an
LLM-merged tree `parent_1/3`), as `tree` prints it.
"""

import json
from contextlib import contextmanager
from pathlib import Path

import click
import polars as pl

from ..core.config import settings
from ..core.errors import InputError
from ..core.results.export import FORMATS, llm_cluster_json, text_table
from ..core.results.facets import breakdown, facet_columns, matching_rows, parse_filters
from ..core.results.map_page import default_path, map_data, render
from ..core.results.outputs import check_output, neutralise_formulas, write_atomically
from ..core.results.reading import (
    load_tree,
    node_texts,
    partitions,
    read_only,
    resolve,
    runs,
    text_names,
)
from .output import (
    alias_option,
    count,
    curation_marks,
    emit_json,
    facet_line,
    facet_option,
    json_option,
    note,
    run_config_option,
    say,
    show_table,
    visible,
    write_data,
)
from .search import search


@contextmanager
def _named_tree(db: Path, dataset: str, run_config: str | None, alias: str | None):
    """A read-only connection and the partition's tree with its names."""
    with read_only(db) as conn:
        yield conn, load_tree(conn, resolve(conn, dataset, run_config), alias)


@click.command()
@json_option
@click.pass_obj
def datasets(db: Path, as_json: bool) -> None:
    """Datasets and run configurations with results: texts, levels, clusters, last run."""
    with read_only(db) as conn:
        rows = partitions(conn).to_dicts()
    if as_json:
        return emit_json(rows)
    show_table(
        rows,
        [
            ("dataset", "dataset"),
            ("run_config", "run_config"),
            ("texts", "texts>"),
            ("levels", "levels"),
            ("finest_clusters", "finest clusters>"),
            ("aliases", "aliases"),
            ("last_materialized_at", "last materialised (UTC)"),
        ],
    )


@click.command(name="runs")
@click.option("--dataset", "-d", default=None, help="Only this dataset's runs.")
@run_config_option
@click.option("--limit", "-n", default=20, show_default=True, type=count(1))
@json_option
@click.pass_obj
def runs_command(db: Path, dataset, run_config, limit: int, as_json: bool) -> None:
    """Dagster runs that wrote results (the `runs` view), newest first."""
    with read_only(db) as conn:
        rows = runs(conn, dataset, run_config, limit).to_dicts()
    if as_json:
        return emit_json(rows)
    for row in rows:
        row["stages"] = len(row.get("stage_seconds") or [])
    columns = [
        ("dagster_run_id", "run id"),
        ("dataset", "dataset"),
        ("run_config", "run_config"),
        ("last_materialized_at", "finished (UTC)"),
        ("seconds", "seconds>"),
        ("stages", "stages>"),
    ]
    if rows and "published" in rows[0]:
        columns.append(("published", "published"))
    show_table(rows, columns)


@click.command()
@click.argument("dataset")
@run_config_option
@click.option("--depth", type=count(1), default=None, help="Show this many levels.")
@alias_option
@json_option
@click.pass_obj
def tree(db: Path, dataset, run_config, depth, alias, as_json: bool) -> None:
    """The cluster tree: sizes, shares and names, top level first."""
    with _named_tree(db, dataset, run_config, alias) as (_, named):
        nodes = named.nodes
    if depth is not None:
        nodes = nodes.filter(pl.col("level") < depth)
    if as_json:
        return emit_json(nodes.drop("position").to_dicts())
    rows = [
        row
        | {
            "indented": "  " * row["level"] + (row["name"] or "") + curation_marks(row),
            "pct": f"{100 * row['share']:.1f}",
        }
        for row in nodes.iter_rows(named=True)
    ]
    show_table(
        rows,
        [("node_id", "cluster"), ("size", "texts>"), ("pct", "% >"), ("indented", "name")],
        title=f"{named.part}, names: {named.names}",
        wrap="indented",
    )


@click.command()
@click.argument("dataset")
@click.argument("cluster")
@run_config_option
@alias_option
@click.option("--examples", "-n", default=5, show_default=True, type=count(0))
@json_option
@click.pass_obj
def show(db: Path, dataset, cluster, run_config, alias, examples: int, as_json: bool) -> None:
    """One cluster: name, summary, keywords, size, parent, children, its most typical texts."""
    with _named_tree(db, dataset, run_config, alias) as (conn, named):
        node = named.node(cluster)
        typical = node_texts(conn, named, cluster, examples).to_dicts() if examples else []
        facets = breakdown(conn, named, cluster)
    parents = named.ancestors(cluster)
    children = named.children(cluster).select("node_id", "name", "size", "share").to_dicts()
    brief = {k: node[k] for k in ("node_id", "level_name", "name", "size")}
    if as_json:
        return emit_json(
            {k: v for k, v in node.items() if k != "position"}
            | {
                "dataset": named.part.dataset,
                "run_config": named.part.run_config,
                "names": named.names,
                "parent": parents[0]["node_id"] if parents else None,
                "path": [{k: p[k] for k in ("node_id", "name")} for p in [*parents[::-1], brief]],
                "children": children,
                "typical_texts": typical,
                "facets": facets,
            }
        )
    say(f"{node['node_id']}  {node['name']}")
    say(
        f"{named.part}, level {node['level_name']}: {node['size']} texts "
        f"({100 * node['share']:.1f}%), names: {named.names}"
    )
    say("path: " + " > ".join(f"{p['node_id']} {p['name']}" for p in [*parents[::-1], brief]))
    if curation_marks(node):
        say("set by people:" + curation_marks(node).strip()[1:-1].join(["  ", ""]))
    if node["flag"]:
        say("flagged for review: " + node["flag"])
    if node["keywords"]:
        say("keywords: " + ", ".join(node["keywords"]))
    if node["summary"]:
        say("summary: " + node["summary"])
    if facets:
        say(facet_line(facets))
    if children:
        show_table(
            children, [("node_id", "child"), ("size", "texts>"), ("name", "name")], wrap="name"
        )
    if typical:
        show_table(
            typical,
            [("row_idx", "row>"), ("similarity", "sim>"), ("text", "most typical texts")],
            wrap="text",
        )


@click.command()
@click.argument("dataset")
@click.argument("cluster")
@run_config_option
@alias_option
@click.option("--limit", "-n", default=20, show_default=True, type=count(0))
@facet_option
@json_option
@click.pass_obj
def texts(db: Path, dataset, cluster, run_config, alias, limit: int, facet, as_json: bool) -> None:
    """The texts of a cluster, the most typical (nearest its centroid) first; --limit 0: all."""
    filters = parse_filters(facet)
    with _named_tree(db, dataset, run_config, alias) as (conn, named):
        only = matching_rows(conn, named.part, filters) if filters else None
        rows = node_texts(conn, named, cluster, limit or None, only).to_dicts()
    if as_json:
        return emit_json(rows)
    show_table(
        rows,
        [("row_idx", "row>"), ("text_id", "text id"), ("similarity", "sim>"), ("text", "text")],
        title=f"{cluster} {named.node(cluster)['name']} ({len(rows)} shown)",
        wrap="text",
    )


def _writable(db: Path, out: Path) -> Path:
    """`out`, unless it would overwrite the results, any DuckDB file or an input."""
    kept = {
        db: "the results database",
        settings.run_configs_path(): "the run configurations",
        settings.operations_path(): "the operations settings",
    }
    return check_output(out, kept, [settings.datasets_dir()])


@click.command()
@click.argument("dataset")
@run_config_option
@alias_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True)
@click.option("--level", default=None, help="JSON: the level to export (default: the finest).")
@click.option(
    "--truncate", default=0, show_default=True, type=count(0),
    help="Cut texts to this many characters (0: whole).",
)  # fmt: skip
@click.option(
    "--formula-guard/--no-formula-guard", default=True, show_default=True,
    help="CSV: prefix cells starting with = + - @ tab or CR with ' so spreadsheets do not run "
    "them as formulas; --no-formula-guard writes them exactly, for programs.",
)  # fmt: skip
@facet_option
@click.option("--out", "-o", type=click.Path(path_type=Path, dir_okay=False), default=None)
@click.pass_obj
def export(
    db: Path, dataset, run_config, alias, fmt, level, truncate, formula_guard, facet, out
) -> None:
    """The clusters with their texts: JSON as `llm cluster` writes it, or CSV / Parquet with one
    row per text and its cluster at every level. Never written over the results database, any
    DuckDB file or an input; written whole or not at all."""
    if fmt == "parquet" and out is None:
        raise InputError("parquet is binary: pass --out FILE")
    if out is not None:
        _writable(db, out)
    filters = parse_filters(facet)
    with _named_tree(db, dataset, run_config, alias) as (conn, named):
        rows = text_names(conn, named)
        if filters:
            rows = rows.filter(pl.col("row_idx").is_in(matching_rows(conn, named.part, filters)))
        extra = facet_columns(conn, named.part)
    if fmt == "json":
        clusters = llm_cluster_json(named, rows, level, truncate)
        if out is None:
            return emit_json(clusters)
        write_atomically(out, json.dumps(clusters, ensure_ascii=False, indent=2))
        return note(f"wrote {len(clusters)} clusters to {out}")
    table = text_table(named, rows, level, truncate)
    if extra.height:
        table = table.join(extra, on="row_idx", how="left", maintain_order="left")
    if fmt == "csv" and formula_guard:
        table = neutralise_formulas(table)
    if out is None:
        return write_data(table.write_csv())
    write_atomically(out, table.write_csv if fmt == "csv" else table.write_parquet)
    note(f"wrote {table.height} texts to {out}")


@click.command(name="map")
@click.argument("dataset")
@run_config_option
@alias_option
@click.option("--out", "-o", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Where to write the page (default: maps/ beside the DuckDB file).")  # fmt: skip
@click.option("--open", "open_browser", is_flag=True, help="Open it in the default browser.")
@click.option("--serve", is_flag=True, help="Serve it on 127.0.0.1 until Ctrl-C.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@json_option
@click.pass_obj
def map_command(db: Path, dataset, run_config, alias, out, open_browser, serve, port, as_json):
    """Write the interactive map of a partition (one self-contained HTML file) and print its
    path."""
    if out is not None:
        _writable(db, out)
    with read_only(db) as conn:
        part = resolve(conn, dataset, run_config)
        data = map_data(conn, part, alias)
    page = render(data)
    try:
        path = write_atomically(out or default_path(db, part), page, create_parent=out is None)
    except InputError as err:
        raise InputError(f"{err}; pass --out to write the map elsewhere") from None
    path = path.resolve()
    if as_json:
        emit_json({"path": str(path), "texts": data.points.height, "names": data.tree.names})
    else:
        click.echo(visible(str(path)))
    if open_browser:
        import webbrowser

        webbrowser.open(path.as_uri())
    if serve:
        from .serve import serve_file

        serve_file(path, port)


COMMANDS = [datasets, runs_command, tree, show, texts, search, export, map_command]
