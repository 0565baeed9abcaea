"""`map --serve`: the map page over HTTP on 127.0.0.1, for a browser on the same machine."""

import contextlib
import signal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import click


def serve_file(path: Path, port: int) -> None:
    """Serve the page at http://127.0.0.1:<port>/ (nothing else) until interrupted (Ctrl-C or
    SIGTERM); port 0 takes any free port. The file is read on every request, so a rewritten map shows on reload."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.split("#")[0].split("?")[0] not in ("/", f"/{path.name}"):
                self.send_error(404, "only the map is served here: /")
                return
            body = path.read_bytes()
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
    with ThreadingHTTPServer(("127.0.0.1", port), Handler) as server:
        click.echo(f"serving http://127.0.0.1:{server.server_port}/ (Ctrl-C to stop)")
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
