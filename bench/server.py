"""A real `manage.py serve` process for the live benchmarks, on the bench's own data."""

import contextlib
import signal
import socket
import subprocess
import sys
import time

import httpx

from bench.env import REPO_ROOT, data_dir

START_TIMEOUT = 90


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SERVE = ("manage.py", "serve")
# serve with benchmark 5's hand-written pipeline connected (bench/handwritten.py)
SERVE_WITH_HANDWRITTEN = ("-m", "bench.serve")


def _ready(answer: httpx.Response) -> bool:
    """Is the server up, its database and broker answering? /healthz also reports the work:
    runs an earlier benchmark left PENDING make it 503 while no worker was seen for a minute,
    which `serve --no-worker` shows until the workers started after it are up."""
    if answer.status_code == 200:
        return True
    report = answer.json()
    return answer.status_code == 503 and all(
        report.get(part, {}).get("ok") for part in ("database", "broker")
    )


class Server:
    def __init__(self, env: dict, mode: str, extra_args=(), command=SERVE):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/graphql/"
        self.log_path = data_dir(mode) / f"serve-{self.port}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, *command, "--port", str(self.port), *extra_args],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited early; see {self.log_path}")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                if _ready(httpx.get(f"{self.base_url}/healthz", timeout=2)):
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"serve was not ready in {START_TIMEOUT}s; see {self.log_path}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
