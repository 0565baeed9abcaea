"""A small OpenAI-compatible HTTP server on 127.0.0.1 for tests: real HTTP, answers derived from
the request, so results are checkable."""

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

EMBEDDING_DIM = 64


def bag_of_words_vector(text: str) -> list[float]:
    """A deterministic embedding: each lowercase word adds +-1 to a hashed dimension."""
    vector = np.zeros(EMBEDDING_DIM)
    for word in re.findall(r"[a-z]+", text.lower()):
        digest = hashlib.md5(word.encode()).digest()
        vector[digest[0] % EMBEDDING_DIM] += 1 if digest[1] % 2 else -1
    norm = np.linalg.norm(vector)
    return (vector / norm if norm else vector).tolist()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802 (http.server's naming)
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((self.path, request))
        self.server.headers.append(dict(self.headers))
        if self.path.endswith("/embeddings"):
            inputs = request["input"] if isinstance(request["input"], list) else [request["input"]]
            self._reply(
                200,
                {
                    "object": "list",
                    "model": request["model"],
                    "data": [
                        {"object": "embedding", "index": i, "embedding": bag_of_words_vector(t)}
                        for i, t in enumerate(inputs)
                    ],
                    "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)},
                },
            )
        else:
            self._reply(404, {"error": {"message": f"no route {self.path}"}})


class OpenAICompatibleServer:
    """Start with `with OpenAICompatibleServer() as server:`; `server.api_base` is its URL."""

    def __init__(self):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.requests = []
        self.httpd.headers = []
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    @property
    def requests(self) -> list:
        return self.httpd.requests

    @property
    def headers(self) -> list:
        return self.httpd.headers

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
