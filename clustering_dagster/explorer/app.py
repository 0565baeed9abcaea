"""The explorer's Starlette app: its routes, its static files (and plotly.js from the installed
`plotly` wheel, served from /vendor, never a CDN), and what keeps it safe on 127.0.0.1: only the
hosts 127.0.0.1 and localhost are answered (no DNS rebinding), every answer carries a content
security policy that runs no script but its own files, an edit is taken only from its own pages
(`curation.same_site`), and a failure is a page or JSON with one line, never a traceback."""

import functools
import gzip
from pathlib import Path

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..commands.curate import default_author
from ..core.results.search import Searcher
from . import pages
from .reads import HOSTS, Failure, MapCache, SearchService
from .render import HERE, error_answer

POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer would make a form's Origin "null"
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class SecurityHeaders:
    """Adds `HEADERS` to every answer that does not set its own."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def sending(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in HEADERS.items():
                    if key not in headers:
                        headers[key] = value
            await send(message)

        await self.app(scope, receive, sending)


@functools.cache
def _plotly_js(gzipped: bool) -> bytes:
    from plotly.offline import get_plotlyjs

    script = get_plotlyjs().encode("utf-8")
    return gzip.compress(script, compresslevel=6, mtime=0) if gzipped else script


def plotly_js(request: Request) -> Response:
    """plotly.js as the installed `plotly` wheel ships it (the map page loads it from here),
    compressed once per process for a browser that takes gzip."""
    gzipped = "gzip" in request.headers.get("accept-encoding", "")
    headers = {"Cache-Control": "public, max-age=86400", "Vary": "Accept-Encoding"}
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    return Response(
        _plotly_js(gzipped), media_type="text/javascript; charset=utf-8", headers=headers
    )


async def http_error(request: Request, err: HTTPException) -> Response:
    """Starlette's own 404 (no such route) and 405, as the explorer's error page."""
    message = f"no page at {request.url.path}: start at /" if err.status_code == 404 else err.detail
    as_json = "/api/" in request.url.path or request.url.path == "/api"
    return error_answer(request, Failure(err.status_code, message), as_json)


def _routes() -> list:
    part = "/p/{dataset}/{run_config}"
    return [
        Route("/", pages.home, name="home"),
        Route("/api/partitions", pages.home_json),
        Route(part, pages.tree_page),
        Route(part + "/", pages.tree_page),
        Route(part + "/c/{node_id:path}/edit", pages.edit_page, methods=["POST"]),
        Route(part + "/c/{node_id:path}", pages.cluster_page),
        Route(part + "/edit", pages.edit_page, methods=["POST"]),
        Route(part + "/search", pages.search_page),
        Route(part + "/map", pages.map_page),
        Route(part + "/changes", pages.changes_page),
        Route(part + "/api/children", pages.children_json),
        Route(part + "/api/cluster/{node_id:path}", pages.cluster_json),
        Route(part + "/api/typical", pages.typical_json),
        Route(part + "/api/search", pages.search_json),
        Route(part + "/api/map", pages.map_json),
        Route(part + "/api/changes", pages.changes_json),
        Route(part + "/api/edit", pages.edit_json, methods=["POST"]),
        Route("/vendor/plotly.min.js", plotly_js),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]


def create_app(
    database: Path, searcher: Searcher | None = None, author: str | None = None
) -> Starlette:
    """The explorer over the results file `database` (read on every request, so it may be
    written meanwhile, or be missing: then pages answer 503). `searcher`: the process's one
    search engine (default: a new one over `database`); `author`: who makes the edits made here
    (default: CLUSTERING_AUTHOR or the login name)."""
    app = Starlette(
        routes=_routes(),
        middleware=[
            Middleware(TrustedHostMiddleware, allowed_hosts=HOSTS),
            Middleware(SecurityHeaders),
            Middleware(GZipMiddleware, minimum_size=2048),
        ],
        exception_handlers={HTTPException: http_error},
    )
    app.state.database = Path(database)
    app.state.search = SearchService(Path(database), searcher)
    app.state.maps = MapCache()
    app.state.author = author or default_author()
    return app
