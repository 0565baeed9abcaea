"""`clustering-dagster explore`: the results in a local web app (`clustering_dagster.explorer`)."""

from pathlib import Path

import click

from ..core.results.reading import read_only


@click.command(name="explore")
@click.option("--port", default=8766, show_default=True, type=click.IntRange(0, 65535),
              help="The port on 127.0.0.1 (0: any free one).")  # fmt: skip
@click.option("--open", "open_browser", is_flag=True, help="Open it in the default browser.")
@click.pass_obj
def explore(db: Path, port: int, open_browser: bool) -> None:
    """Browse the results in a local web app on http://127.0.0.1:PORT/ until Ctrl-C: partitions
    and runs, the tree, each cluster with its texts, search, the map and what changed. Reads the
    DuckDB file read-only on every request, with no network."""
    from ..explorer.server import serve

    with read_only(db):  # no results file: one line now rather than 503 pages later
        pass
    serve(db, port, open_browser)
