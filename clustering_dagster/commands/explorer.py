"""`clustering-dagster explore`: the results in a local web app (`clustering_dagster.explorer`)."""

from pathlib import Path

import click

from ..core.results.reading import read_only


@click.command(name="explore")
@click.option("--port", default=8766, show_default=True, type=click.IntRange(0, 65535),
              help="The port on 127.0.0.1 (0: any free one).")  # fmt: skip
@click.option("--open", "open_browser", is_flag=True, help="Open it in the default browser.")
@click.option("--author", default=None,
              help="Who makes the edits made in it (default: CLUSTERING_AUTHOR or the login name).")  # fmt: skip
@click.pass_obj
def explore(db: Path, port: int, open_browser: bool, author: str | None) -> None:
    """Browse the results in a local web app on http://127.0.0.1:PORT/ until Ctrl-C: partitions
    and runs, the tree, each cluster with its texts, search, the map and what changed; and edit
    a tree there (rename, tag, flag, merge, move, move texts, split, undo) as `curate` does.
    Reads the DuckDB file read-only on every request and writes only to save an edit, with no
    network."""
    from ..explorer.server import serve

    with read_only(db):  # no results file: one line now rather than 503 pages later
        pass
    serve(db, port, open_browser, author)
