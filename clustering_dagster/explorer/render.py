"""Answers: pages from the Jinja templates (autoescaped, texts with their control characters shown
as escapes), JSON, and the error page or JSON for a failure. `endpoint` wraps a handler so that
nothing but its answer or one line of error reaches the client."""

import functools
import json
import os
import sys
import traceback
from datetime import date, datetime
from pathlib import Path

import jinja2
import numpy as np
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from ..commands.output import visible
from .reads import Failure, cluster_url, failure, part_url

HERE = Path(__file__).parent

ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def shown(value) -> str:
    """Text from the data as a page shows it: control characters and bidi overrides as visible
    escapes (`\\x1b`, `\\u202e`), line breaks kept; the template escapes the HTML."""
    if value is None:
        return ""
    return "\n".join(visible(line) for line in str(value).split("\n"))


def pct(share) -> str:
    return "" if share is None else f"{100 * share:.1f}%"


def when(value) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def number(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.2f}"
    return f"{value:,}"


ENV.filters |= {"shown": shown, "pct": pct, "when": when, "number": number}
ENV.globals |= {"part_url": part_url, "cluster_url": cluster_url}


def with_query(request: Request, **changes) -> str:
    """This page's address (path and query) with some query parameters changed (None: removed)."""
    params = dict(request.query_params)
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    url = request.url.replace_query_params(**params)
    return url.path + (f"?{url.query}" if url.query else "")


ENV.globals["with_query"] = with_query


def page(request: Request, template: str, status: int = 200, headers=None, **context) -> Response:
    context.setdefault("part", None)
    context.setdefault("names", None)
    context.setdefault("query", "")
    body = ENV.get_template(template).render(request=request, **context)
    return HTMLResponse(body, status_code=status, headers=headers)


def _plain(value):
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


class ExactJSON(JSONResponse):
    """JSON with every text exact (not ASCII-escaped), times as ISO 8601."""

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=False, default=_plain).encode("utf-8")


def log_failure(request: Request, err: BaseException) -> None:
    """One line on the server's stderr (with CLUSTERING_DEBUG=1, the traceback)."""
    print(
        f"explorer: {request.method} {visible(request.url.path)} failed: "
        f"{type(err).__name__}: {visible(' '.join(str(err).split()))}",
        file=sys.stderr,
        flush=True,
    )
    if os.environ.get("CLUSTERING_DEBUG"):
        traceback.print_exception(err)


def error_answer(request: Request, err: Failure, as_json: bool) -> Response:
    if as_json:
        return ExactJSON({"error": err.message, "status": err.status}, status_code=err.status)
    return page(request, "error.html", status=err.status, code=err.status, error=err.message)


def endpoint(as_json: bool = False):
    """A handler (run in the thread pool) whose failures are answered with their status and one
    line, never a traceback."""

    def wrap(handler):
        @functools.wraps(handler)
        def run(request: Request, *args) -> Response:
            try:
                return handler(request, *args)
            except Exception as err:
                answer = failure(err)
                if answer.status >= 500:
                    log_failure(request, err)
                return error_answer(request, answer, as_json)

        return run

    return wrap
