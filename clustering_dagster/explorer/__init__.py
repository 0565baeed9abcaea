"""`clustering-dagster explore`: the results in a local web app, on 127.0.0.1, with no network.

Pages (each a shareable address): `/` the partitions and the runs that wrote them;
`/p/{dataset}/{run_config}` the tree; `.../c/{node_id}` one cluster; `.../search?q=` semantic
search; `.../map` the map; `.../changes` what changed since the previous run. JSON under `/api`
and `.../api/...`. Every request reads through `core.results` on a short read-only connection
(so runs keep writing); texts are escaped and their control characters shown as escapes. People
edit the tree from a cluster page (`curation`: POST `.../c/{node_id}/edit`, `.../api/edit`),
each edit saved on a short read-write connection.

`app.create_app` builds the Starlette app; `server.serve` runs it with uvicorn.
"""

from .app import create_app

__all__ = ["create_app"]
