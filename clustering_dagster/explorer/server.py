"""Running the explorer: uvicorn on 127.0.0.1 only, on a socket bound here first so that a port in
use is one clear line, until Ctrl-C or SIGTERM."""

import contextlib
import errno
import os
import signal
import socket
from pathlib import Path

import click

from ..core.errors import InputError

HOST = "127.0.0.1"


def bind(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:`port` (0: any free port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((HOST, port))
        sock.listen(128)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise InputError(
                f"port {port} on {HOST} is in use: pass --port with another (0: any free one)"
            ) from None
        raise InputError(f"cannot serve on {HOST}:{port}: {err.strerror}") from None
    sock.set_inheritable(True)
    return sock


def serve(database: Path, port: int, open_browser: bool = False, author: str | None = None) -> None:
    """Serve the explorer over `database` at http://127.0.0.1:<port>/ until interrupted; its
    edits are `author`'s (default: CLUSTERING_AUTHOR or the login name)."""
    import uvicorn

    from .app import create_app

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    sock = bind(port)
    app = create_app(database, author=author)
    click.echo("loading the search model...", err=True)
    app.state.search.load_models()
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        server_header=False,
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    url = f"http://{HOST}:{sock.getsockname()[1]}/"
    click.echo(f"serving the explorer of {database} on {url} (Ctrl-C to stop)")
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    # SIGTERM stops it as Ctrl-C does, even when it was started with SIGTERM blocked
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    with sock, contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])
