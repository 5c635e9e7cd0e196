"""A headless Chromium driven over the Chrome DevTools Protocol, for the browser tests.

Why not Selenium or Playwright: both would be a new dependency, and Playwright downloads a browser
build of its own. Debian's `chromium` package plus the `websockets` client we already ship is all
this needs: Chromium starts with `--remote-debugging-port=0`, writes the port it picked into
DevToolsActivePort in its profile folder, and its first tab takes CDP commands over a WebSocket.

    with Chromium.launch(tmp_path) as browser:
        browser.navigate("http://127.0.0.1:8000/admin/login/")
        browser.evaluate("document.title")
        browser.wait_for("document.querySelector('.graphiql-container') !== null")
        png = browser.screenshot()

`evaluate` runs an expression in the page (promises are awaited) and returns its JSON value, or
raises with the page's exception. Console errors and uncaught exceptions are kept in `errors`, so
a test can show why a page stayed blank; requested URLs, failed requests and WebSocket connections
(URL, handshake response, frames) are kept too. Events are read while commands wait for their
answers, so they are up to date after any command (`pump_events` sends a no-op one).
"""

import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
from websockets.sync.client import connect

CHROMIUM = os.environ.get("CHROMIUM_BINARY", "/usr/bin/chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,900",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
START_TIMEOUT_SECONDS = 30
COMMAND_TIMEOUT_SECONDS = 30


def chromium_available() -> bool:
    return shutil.which(CHROMIUM) is not None


class BrowserError(AssertionError):
    """A CDP command failed, a page script threw, or a wait ran out."""


class Chromium:
    def __init__(self, process: subprocess.Popen, socket, log_path: Path):
        self.process = process
        self._socket = socket
        self._ids = itertools.count(1)
        self.log_path = log_path
        self.errors: list[str] = []
        self.failed_requests: list[str] = []
        self.requested_urls: list[str] = []
        self._urls_by_request: dict[str, str] = {}
        self.websockets: list[dict] = []

    @classmethod
    @contextlib.contextmanager
    def launch(cls, profile_dir: Path):
        """Start Chromium with a fresh profile in `profile_dir`; stop it on exit."""
        profile_dir.mkdir(parents=True, exist_ok=True)
        log_path = profile_dir / "chromium.log"
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                [CHROMIUM, *FLAGS, f"--user-data-dir={profile_dir}", "about:blank"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            port = _devtools_port(process, profile_dir, log_path)
            page = _first_page(port)
            with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as socket:
                browser = cls(process, socket, log_path)
                for domain in ("Page", "Runtime", "Network"):
                    browser.send(f"{domain}.enable")
                yield browser
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def send(self, method: str, **params) -> dict:
        """Send one CDP command and return its result; events that arrive meanwhile are noted."""
        command_id = next(self._ids)
        self._socket.send(json.dumps({"id": command_id, "method": method, "params": params}))
        deadline = time.monotonic() + COMMAND_TIMEOUT_SECONDS
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError(f"No answer to {method} within {COMMAND_TIMEOUT_SECONDS}s")
            message = json.loads(self._socket.recv(timeout=remaining))
            if message.get("id") == command_id:
                if "error" in message:
                    raise BrowserError(f"{method} failed: {message['error']}")
                return message["result"]
            self._note_event(message)

    def _note_event(self, message: dict) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            description = details.get("exception", {}).get("description") or details.get("text")
            self.errors.append(f"uncaught: {description}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append(
                "console.error: " + " ".join(str(arg.get("value", "")) for arg in params["args"])
            )
        elif method == "Network.loadingFailed":
            url = self._urls_by_request.get(params["requestId"], "?")
            self.failed_requests.append(f"{url}: {params.get('errorText')}")
        elif method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if not url.startswith("data:"):  # inline fonts: long, and nothing is fetched
                self.requested_urls.append(url)
                self._urls_by_request[params["requestId"]] = url
        elif method == "Network.webSocketCreated":
            self.websockets.append({"id": params["requestId"], "url": params["url"], "frames": []})
        elif method == "Network.webSocketHandshakeResponseReceived":
            self._websocket(params)["response"] = params["response"]
        elif method in ("Network.webSocketFrameSent", "Network.webSocketFrameReceived"):
            direction = "sent" if method.endswith("Sent") else "received"
            frame = (direction, params["response"]["payloadData"])
            self._websocket(params)["frames"].append(frame)
        elif method == "Network.webSocketClosed":
            self._websocket(params)["closed"] = True

    def _websocket(self, params: dict) -> dict:
        for websocket in self.websockets:
            if websocket["id"] == params["requestId"]:
                return websocket
        return {"frames": []}  # opened before Network.enable: not followed

    def pump_events(self) -> None:
        """Take in the events that arrived since the last command (a cheap no-op command)."""
        self.send("Runtime.evaluate", expression="0")

    def navigate(self, url: str) -> None:
        """Open `url` and wait until the document has loaded (scripts included)."""
        self.send("Page.navigate", url=url)
        self.wait_for(
            f"location.href.startsWith({json.dumps(url.split('#')[0])}) "
            "&& document.readyState === 'complete'"
        )

    def evaluate(self, expression: str):
        """The JSON value of `expression` in the page (an awaited promise's value)."""
        result = self.send(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            description = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"{expression!r} threw: {description}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30, interval: float = 0.1):
        """Poll `expression` until it is truthy; return its value or fail with what went wrong."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(BrowserError):
                # A navigation may destroy the context mid-evaluation: just ask again.
                value = self.evaluate(expression)
                if value:
                    return value
            if time.monotonic() > deadline:
                raise BrowserError(
                    f"Still false after {timeout}s: {expression}\n"
                    f"page errors: {self.errors}\nfailed requests: {self.failed_requests}"
                )
            time.sleep(interval)

    def screenshot(self) -> bytes:
        return base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])


def _devtools_port(process: subprocess.Popen, profile_dir: Path, log_path: Path) -> int:
    """The port Chromium chose, read from the DevToolsActivePort file it writes when ready."""
    port_file = profile_dir / "DevToolsActivePort"
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BrowserError(
                f"Chromium exited ({process.returncode}):\n{log_path.read_text(errors='replace')}"
            )
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            return int(port_file.read_text().splitlines()[0])
        time.sleep(0.05)
    raise BrowserError(f"Chromium did not open its DevTools port within {START_TIMEOUT_SECONDS}s")


def _first_page(port: int) -> dict:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
            pages = [target for target in targets if target.get("type") == "page"]
            if pages:
                return pages[0]
        time.sleep(0.05)
    raise BrowserError("Chromium opened no page target")
