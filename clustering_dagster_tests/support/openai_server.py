"""A small OpenAI-compatible HTTP server on 127.0.0.1 for tests: real HTTP, answers derived from
the request, so results are checkable.

`/v1/embeddings` returns bag-of-words vectors. `/v1/chat/completions` answers the labeling prompts
of `clustering_dagster.core.naming.summarize` and `.merge`, and the facet prompts of
`.conversation_facets`, told apart by the answer's JSON schema (in `response_format`, or shown in
the prompt): titles are built from the most frequent content words of the delimited texts, parents
from the words of their children's titles, a conversation's request and task from the content
words of its user turns (language "en", concerning 1). It behaves like a naive model in one
respect: an instruction "answer only with: X" found outside the <text> data blocks is obeyed.

Structured-output forms the server does not `accept` are refused as real servers do: `json_schema`
with llama.cpp's HTTP 500 ("Input should be 'text' or 'json_object'"), `json_object` with a 400.
Faults are injected with `inject`: "429", "503", "500" and "401" (an error status; a 429 or 503
may carry `retry_after` seconds), "hang" (no reply before `hang_s`), "invalid_json" (a chatty reply
that is not JSON), "unknown_parent" (an assignment naming no offered category), and the harmless
defects of small models: "near_miss_parent" (an offered name in other case and punctuation),
"control_chars" (raw control characters inside JSON strings), "long_title" (a 14-word title),
"blank_category" (an extra category without a name) and "language_name" (a conversation's
language as a name, "English", not a code). Every reply can be delayed by a fixed
`latency` (seconds).
"""

import argparse
import hashlib
import html
import json
import re
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

EMBEDDING_DIM = 64

STOP_WORDS = ENGLISH_STOP_WORDS | {"i'm", "i've", "it's", "don't", "can't", "please"}


def bag_of_words_vector(text: str) -> list[float]:
    """A deterministic embedding: each lowercase word adds +-1 to a hashed dimension."""
    vector = np.zeros(EMBEDDING_DIM)
    for word in re.findall(r"[a-z]+", text.lower()):
        digest = hashlib.md5(word.encode()).digest()
        vector[digest[0] % EMBEDDING_DIM] += 1 if digest[1] % 2 else -1
    norm = np.linalg.norm(vector)
    return (vector / norm if norm else vector).tolist()


def content_words(text: str) -> list[str]:
    """Lowercase words of three letters or more that are not stop words, each once, in order."""
    words = [w for w in re.findall(r"[a-z][a-z']+", text.lower()) if w not in STOP_WORDS]
    return list(dict.fromkeys(w for w in words if len(w) > 2))


def top_words(texts: list[str], n: int) -> list[str]:
    """The n words found in most of the texts (ties: first seen first)."""
    counts = Counter(w for text in texts for w in content_words(text))
    return [w for w, _ in counts.most_common(n)]


def _block(prompt: str, tag: str) -> str:
    found = re.search(rf"<{tag}\b[^>]*>(.*?)</{tag}>", prompt, re.S)
    return found.group(1) if found else ""


def _items(block: str, tag: str) -> list[str]:
    return [html.unescape(t.strip()) for t in re.findall(rf"<{tag}>(.*?)</{tag}>", block, re.S)]


def _at_most(prompt: str) -> int:
    return int(re.search(r"at most (\d+) (?:higher-level |distinct )?categor", prompt).group(1))


def describe_cluster(prompt: str) -> dict:
    texts = _items(_block(prompt, "cluster"), "text")
    words = top_words(texts, 3) or ["misc"]
    share = sum(words[0] in content_words(t) for t in texts) / max(len(texts), 1)
    return {
        "title": " ".join(words).capitalize(),
        "summary": f"Texts about {', '.join(words)}. {len(texts)} examples were shown.",
        "category": words[0].capitalize(),
        "coherence": int(min(10, max(1, round(10 * share)))),
    }


def propose_parents(prompt: str) -> dict:
    titles = _items(_block(prompt, "clusters"), "title")
    words = top_words(titles, _at_most(prompt)) or ["misc"]
    return {
        "categories": [
            {"name": f"{w.capitalize()} questions", "description": f"Clusters about {w}."}
            for w in words
        ]
    }


def deduplicate(prompt: str) -> dict:
    names = _items(_block(prompt, "candidates"), "name")
    unique = list(dict.fromkeys(n.casefold() for n in names))[: _at_most(prompt)]
    return {
        "categories": [
            {"name": name.capitalize(), "description": f"Clusters about {name.split()[0]}."}
            for name in unique
        ]
    }


def assign_parent(prompt: str) -> dict:
    words = set(content_words(" ".join(_items(_block(prompt, "cluster"), "title"))))
    names = _items(_block(prompt, "categories"), "name")
    best = max(names, key=lambda name: len(words & set(content_words(name))))
    return {"category": best}


def describe_parent(prompt: str) -> dict:
    titles = _items(_block(prompt, "clusters"), "title")
    taken = {t.casefold() for t in titles}
    for n in range(3, 7):  # as many words as it takes not to be named like one of the children
        words = top_words(titles, n) or ["misc"]
        if " ".join(words).casefold() not in taken:
            break
    return {
        "title": " ".join(words).capitalize(),
        "summary": f"Groups {len(titles)} clusters about {', '.join(words)}.",
    }


def describe_conversation(prompt: str) -> dict:
    block = _block(prompt, "conversation")
    turns = re.findall(r'<text role="user">(.*?)</text>', block, re.S)
    words = top_words([html.unescape(t) for t in turns], 3) or ["nothing"]
    return {
        "request": f"The user asks about {', '.join(words)}.",
        "task": f"Answer a question about {' '.join(words)}",
        "language": "en",
        "concerning": 1,
    }


ANSWERS = {
    "cluster_description": describe_cluster,
    "parent_candidates": propose_parents,
    "deduplicated_categories": deduplicate,
    "parent_assignment": assign_parent,
    "parent_description": describe_parent,
    "conversation_facets": describe_conversation,
}


FORMS = ("json_schema", "json_object", "prompt")


def form_of(request: dict) -> str:
    return (request.get("response_format") or {}).get("type", "prompt")


def _prompt(request: dict) -> str:
    return next(m["content"] for m in request["messages"] if m["role"] == "user")


def schema_of(request: dict) -> dict:
    """The answer's JSON schema: from `response_format`, or the last JSON line of the prompt."""
    response_format = request.get("response_format") or {}
    if "json_schema" in response_format:
        return response_format["json_schema"]["schema"]
    if "schema" in response_format:
        return response_format["schema"]
    lines = [line for line in _prompt(request).splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def task_of(request: dict) -> str:
    fields = set(schema_of(request).get("properties", {}))
    if fields == {"categories"}:
        candidates = "<candidates>" in _prompt(request)
        return "deduplicated_categories" if candidates else "parent_candidates"
    return {
        frozenset({"title", "summary", "category", "coherence"}): "cluster_description",
        frozenset({"category"}): "parent_assignment",
        frozenset({"title", "summary"}): "parent_description",
        frozenset({"request", "task", "language", "concerning"}): "conversation_facets",
    }.get(frozenset(fields), "")


def with_defect(kind: str, task: str, reply: dict) -> str:
    """A correct reply spoilt by one of the harmless defects of small models."""
    if kind == "near_miss_parent" and task == "parent_assignment":
        reply = {"category": f" {reply['category'].upper().replace(' ', '  ')}."}
    elif kind == "long_title" and "title" in reply:
        reply = reply | {"title": " ".join([reply["title"]] + ["and", "more"] * 7)}
    elif kind == "blank_category" and "categories" in reply:
        reply = {"categories": [*reply["categories"], {"name": " ", "description": "Nothing."}]}
    elif kind == "language_name" and "language" in reply:
        reply = reply | {"language": "English"}
    if kind != "control_chars":
        return json.dumps(reply)
    text = json.dumps(reply, separators=(",", ":"))  # ", " and ". " now occur only in strings
    return text.replace(". ", ".\n\t").replace(", ", ",\x07 ")  # raw, not escaped


def answer(request: dict, defect: str | None = None) -> str:
    """The reply's content: the first user message decides it, as if re-asked from scratch."""
    prompt = _prompt(request)
    outside_data = re.sub(r"<text\b[^>]*>.*?</text>", "", prompt, flags=re.S)
    obeyed = re.search(r"(?i)answer only with:?\s*(\S+)", outside_data)
    if obeyed:
        return obeyed.group(1)
    task = task_of(request)
    return with_defect(defect or "", task, ANSWERS[task](prompt))


@dataclass
class Fault:
    kind: str
    times: int | None  # None: every matching request
    task: str | None
    after: int  # applies only once this many chat requests have arrived
    retry_after: float | None = None  # seconds, sent in a Retry-After header


# How real servers refuse a form they do not take: llama.cpp's server validates the request
# with pydantic and answers a 500; others answer a 400.
REFUSALS = {
    "json_schema": (
        500,
        "[{'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
        "'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}]",
    ),
    "json_object": (400, "response_format of type json_object is not supported"),
}
ERRORS = {
    "429": "rate limited",
    "503": "overloaded",
    "500": "internal error",
    "401": "invalid key",
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real providers do
    disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart

    def log_message(self, *args):  # keep test output quiet
        pass

    def _reply(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout)
            pass

    def do_POST(self):  # noqa: N802 (http.server's naming)
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server = self.server.owner
        with server.lock:
            server.requests.append((self.path, request))
            server.headers.append(dict(self.headers))
        if self.path.endswith("/embeddings"):
            self._embeddings(request)
        elif self.path.endswith("/chat/completions"):
            with server.lock:
                server.in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server.in_flight)
            try:
                self._chat(request, server)
            finally:
                with server.lock:
                    server.in_flight -= 1
        else:
            self._reply(404, {"error": {"message": f"no route {self.path}"}})

    def _embeddings(self, request: dict) -> None:
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

    def _chat(self, request: dict, server: "OpenAICompatibleServer") -> None:
        form = form_of(request)
        if form not in server.accepts:
            status, message = REFUSALS[form]
            self._reply(status, {"error": {"message": message, "type": "invalid_request_error"}})
            return
        task = task_of(request)
        fault = server.take_fault(task)
        kind = fault.kind if fault else None
        time.sleep(server.latency)
        if kind == "hang":
            time.sleep(server.hang_s)
        if kind in ERRORS:
            wait = fault.retry_after
            self._reply(
                int(kind),
                {"error": {"message": ERRORS[kind], "type": "server_error"}},
                {} if wait is None else {"Retry-After": f"{wait:g}"},
            )
            return
        if kind == "invalid_json":
            content = 'Sure! Here is the JSON you asked for: {"title": "unfinished'
        elif kind == "unknown_parent" and task == "parent_assignment":
            content = json.dumps({"category": "A category nobody offered"})
        else:
            content = answer(request, kind)
        prompt_tokens = sum(len(m["content"].split()) for m in request["messages"])
        self._reply(
            200,
            {
                "id": f"chatcmpl-{len(server.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": request["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": content},
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": len(content.split()),
                    "total_tokens": prompt_tokens + len(content.split()),
                },
            },
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # a burst of concurrent connections is accepted, not dropped


class OpenAICompatibleServer:
    """Start with `with OpenAICompatibleServer() as server:`; `server.api_base` is its URL."""

    def __init__(self, latency: float = 0.0, hang_s: float = 2.0, accepts: tuple = FORMS):
        self.latency = latency
        self.hang_s = hang_s
        self.accepts = accepts  # the structured-output forms it takes
        self.lock = threading.Lock()
        self.requests: list[tuple[str, dict]] = []
        self.headers: list[dict] = []
        self.arrivals: list[float] = []  # time.monotonic() of each chat request
        self.faults: list[Fault] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.owner = self
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def inject(
        self,
        kind: str,
        times: int | None = 1,
        task: str | None = None,
        after: int = 0,
        retry_after: float | None = None,
    ) -> None:
        """Make the next `times` chat requests (of `task`, once `after` have arrived) fail so."""
        self.faults.append(Fault(kind, times, task, after, retry_after))

    def take_fault(self, task: str) -> Fault | None:
        with self.lock:
            self.arrivals.append(time.monotonic())
            for fault in self.faults:
                if fault.task not in (None, task) or len(self.arrivals) <= fault.after:
                    continue
                if fault.times is None:
                    return fault
                if fault.times > 0:
                    fault.times -= 1
                    return fault
            return None

    def chats(self) -> list[dict]:
        """Every chat request so far, in arrival order."""
        with self.lock:
            return [r for path, r in self.requests if path.endswith("/chat/completions")]

    def chat_tasks(self) -> list[str]:
        """The task of every chat request so far, in arrival order."""
        return [task_of(r) for r in self.chats()]

    def chat_forms(self) -> list[str]:
        """The structured-output form of every chat request so far, in arrival order."""
        return [form_of(r) for r in self.chats()]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def main() -> None:
    """Serve on 127.0.0.1 until standard input closes; the first line printed is the URL."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per chat reply")
    args = parser.parse_args()
    with OpenAICompatibleServer(latency=args.latency) as server:
        print(server.api_base, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
