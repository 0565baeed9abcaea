"""Headless Chromium (Debian's `chromium` package) driven over the DevTools protocol, to check a
page as a browser shows it: what it logs, what it requests, what its DOM holds."""

import base64
import contextlib
import itertools
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from websockets.sync.client import connect

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--enable-unsafe-swiftshader",  # software WebGL for plotly's scattergl, without a warning
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--window-size=1280,900",
]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    """One tab: `open(url)` loads a page and records console errors, uncaught exceptions and
    every network request; `evaluate(js)` returns a JSON-able value."""

    def __init__(self, socket):
        self._socket = socket
        self._ids = itertools.count(1)
        self.errors: list[str] = []
        self.requests: list[str] = []

    def _record(self, event: dict) -> None:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            self.errors.append(
                " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            )
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(details.get("exception", {}).get("description", details["text"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.errors.append(params["entry"]["text"])
        elif method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])

    def call(self, method: str, timeout: float = 60, **params) -> dict:
        ident = next(self._ids)
        self._socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self._socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self._record(message)

    def wait_for(self, method: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self._socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            self._record(message)
            if message.get("method") == method:
                return message["params"]

    def open(self, url: str, timeout: float = 60) -> None:
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.call(f"{domain}.enable")
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired", timeout)

    def evaluate(self, expression: str, timeout: float = 60):
        result = self.call(
            "Runtime.evaluate",
            timeout,
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"].get("text", "evaluation failed"))
        return result["result"].get("value")

    def wait_until(self, expression: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {timeout} s: {expression}")
            time.sleep(0.2)

    def mouse_click(self, x: float, y: float) -> None:
        """A real click of the left button at (x, y) in the viewport."""
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def click(self, selector: str) -> None:
        """A real click in the middle of the element `selector` finds, scrolled into view."""
        x, y = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return [r.left + r.width / 2, r.top + r.height / 2]; })()"
        )
        self.mouse_click(x, y)

    def texts(self, selector: str) -> list[str]:
        """The text of every element `selector` finds, in document order."""
        return self.evaluate(
            f"Array.from(document.querySelectorAll({json.dumps(selector)})).map(e => e.textContent)"
        )

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        Path(path).write_bytes(base64.b64decode(data))


class Browser:
    """`with Browser() as page:` a fresh headless Chromium with its own profile, stopped after."""

    def __enter__(self) -> Page:
        self._cleanup = contextlib.ExitStack()
        # Chromium's helper processes may still write to the profile while it is removed
        profile = Path(
            self._cleanup.enter_context(tempfile.TemporaryDirectory(ignore_cleanup_errors=True))
        )
        self._log = profile / "stderr.log"
        with self._log.open("w") as log:
            self._process = subprocess.Popen(
                [chromium(), *FLAGS, f"--user-data-dir={profile}/profile", "about:blank"],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self._cleanup.callback(self._stop)
        try:
            port = self._devtools_port()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as reply:
                targets = [t for t in json.load(reply) if t["type"] == "page"]
            url = targets[0]["webSocketDebuggerUrl"]
            return Page(self._cleanup.enter_context(connect(url, max_size=None)))
        except BaseException:
            self._cleanup.close()
            raise

    def _stop(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=30)

    def _devtools_port(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._process.poll() is None:
            found = re.search(
                r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", self._log.read_text()
            )
            if found:
                return int(found.group(1))
            time.sleep(0.1)
        raise RuntimeError(
            f"chromium did not open its DevTools port: {self._log.read_text()[-2000:]}"
        )

    def __exit__(self, *exc) -> None:
        self._cleanup.close()
