"""A local webhook receiver for benchmarks 10 and 11: HTTP/1.1 with keep-alive, optionally TLS,
in a thread of the bench process, answering 200 "ok" to every request and recording when each
arrived (time.perf_counter(), the clock the bench times its writes with).

An asyncio server, so one thread serves any number of connections with little CPU (on 2 cores
it shares the machine with the server and the workers it measures; a thread per connection cost
more): the engine's requests and the hand-written baselines' pay it alike.
"""

import asyncio
import contextlib
import json
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
ANSWER_AND_CLOSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


@dataclass
class Arrival:
    at: float  # time.perf_counter() when the whole request had arrived
    body: dict
    idempotency_key: str


class Receiver:
    def __init__(self, tls: ssl.SSLContext | None = None):
        self.arrivals: list[Arrival] = []
        self.connections = 0  # connections accepted (reuse shows as fewer than requests)
        self._changed = threading.Condition()
        self.scheme = "https" if tls else "http"
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls, backlog=512)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def url(self, host: str = "127.0.0.1", path: str = "/hook") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        # Cancelled at close: end as a normal return (asyncio's stream callback reads the
        # task's exception and would log a cancelled one).
        quiet = (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, asyncio.CancelledError)
        with contextlib.suppress(*quiet):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length") or 0))
                self._record(body, headers.get("idempotency-key", ""))
                close = headers.get("connection", "").lower() == "close" or lines[0].endswith(
                    "HTTP/1.0"
                )
                writer.write(ANSWER_AND_CLOSE if close else ANSWER)
                await writer.drain()
                if close:
                    break
        writer.close()

    def _record(self, body: bytes, key: str) -> None:
        arrived = time.perf_counter()
        try:
            parsed = json.loads(body) if body else {}
        except ValueError:
            parsed = {}
        with self._changed:
            self.arrivals.append(Arrival(arrived, parsed, key))
            self._changed.notify_all()

    def wait(self, predicate, timeout: float, what: str = "a webhook"):
        """Block until predicate(arrivals) is true; TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self.arrivals):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
                self._changed.wait(left)

    def count(self) -> int:
        return len(self.arrivals)

    def close(self) -> None:
        async def stop():
            self._server.close()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:  # the connections still open (kept alive)
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            await self._server.wait_closed()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass
class LocalTLS:
    """A CA made for the run (trustme, as the tests do), a certificate for localhost and
    127.0.0.1, the CA's file for the server's and workers' processes (BENCH_WEBHOOK_CA)."""

    server: ssl.SSLContext
    client: ssl.SSLContext
    ca_file: Path


def local_tls(directory: Path) -> LocalTLS:
    import trustme

    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    directory.mkdir(parents=True, exist_ok=True)
    ca_file = directory / "bench-webhook-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return LocalTLS(server=server, client=client, ca_file=ca_file)


def trust_bench_ca() -> None:
    """In a server or worker process of the bench: webhooks trust the run's CA when
    BENCH_WEBHOOK_CA names its file (as the tests patch TLS_VERIFY)."""
    import os

    ca_file = os.environ.get("BENCH_WEBHOOK_CA")
    if ca_file:
        from automation.actions import webhooks

        webhooks.TLS_VERIFY = ssl.create_default_context(cafile=ca_file)
