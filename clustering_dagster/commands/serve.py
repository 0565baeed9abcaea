"""`map --serve`: the map page over HTTP on 127.0.0.1, for a browser on the same machine."""

import contextlib
import errno
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import click

from ..core.errors import InputError

# A client that goes away mid-answer: worth a line on stderr, never a traceback.
DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


class QuietServer(ThreadingHTTPServer):
    """Logs a failed request in one line on stderr instead of a traceback."""

    daemon_threads = True

    def handle_error(self, request, client_address):
        err = sys.exc_info()[1]
        what = "went away" if isinstance(err, DISCONNECTS) else f"failed: {err!r}"
        print(f"map server: a request from {client_address[0]} {what}", file=sys.stderr)


def serve_file(path: Path, port: int) -> None:
    """Serve the page at http://127.0.0.1:<port>/ (nothing else) until interrupted (Ctrl-C or
    SIGTERM); port 0 takes any free port. The file is read on every request, so a rewritten map
    shows on reload, and a removed one answers 503."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.split("#")[0].split("?")[0] not in ("/", f"/{path.name}"):
                self.send_error(404, "only the map is served here: /")
                return
            try:
                body = path.read_bytes()
            except OSError:
                self.send_error(503, "the map file is gone: write it again with `map`")
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):
            pass

    # SIGTERM stops it as Ctrl-C does, even when it was started with SIGTERM ignored or blocked
    # (as a child of some job runners and test harnesses is)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        server = QuietServer(("127.0.0.1", port), Handler)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise InputError(
                f"port {port} on 127.0.0.1 is in use: pass --port with another (0: any free one)"
            ) from None
        raise InputError(f"cannot serve on 127.0.0.1:{port}: {err.strerror}") from None
    with server:
        click.echo(f"serving http://127.0.0.1:{server.server_port}/ (Ctrl-C to stop)")
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
