"""How a webhook request travels once the guard (actions/webhooks.py) has chosen the address.

The guard hands over a checked IP and the URL's host name; this module connects to that IP (TLS
with the host name as server name and certificate name), sends one HTTP/1.1 request and reads a
bounded prefix of the answer, under the attempt's one deadline. It is synchronous, in the
worker's own thread: nothing is set up per attempt that does not depend on the attempt.

- **One deadline per attempt.** Socket timeouts bound each read or write alone, so a server
  trickling a byte at a time would never trip them. Every socket operation here (connect, TLS
  handshake, each send and receive) is given the time left until the attempt's deadline instead,
  and fails at once when none is left; CPython bounds a TLS handshake, a TLS read and a sendall by
  their timeout as a whole. The deadline is the calling thread's (`within`), so a connection
  reused by a later attempt obeys that attempt's deadline.
- **One SSL context per process.** Loading the CA bundle took tens of milliseconds per client
  (and the old code built one per hop, for http:// too). The context is built on first use by an
  https request and again only when its setting (webhooks.TLS_VERIFY) is another object; an
  ssl.SSLContext given there (tests trusting their own CA) is used as it is.
- **Connections are reused only for the same (scheme, IP, port, host name).** The key holds the
  pinned IP, so a connection never outlives the guard's check of a later attempt (each attempt
  resolves and checks again and then looks for a connection to that IP), and the host name, so a
  TLS connection whose certificate was checked for one name never carries a request for another.
  A connection goes back to the pool only when its answer was read to the end and the server
  keeps it open (HTTP/1.1 keep-alive; h11 decides); one cut at the read limit, at the deadline or
  by an error is closed. The pool keeps at most POOL_PER_KEY idle connections per key and
  POOL_KEYS keys (least recently used first out), each idle at most POOL_IDLE_SECONDS, and checks
  before reuse that the server has not closed it. A request that fails on a reused connection
  before any answer (the server closed it as we sent: it never saw the request) is sent once
  more on a new one, as browsers do.
"""

import contextlib
import os
import select
import socket
import ssl
import threading
import time
from collections import OrderedDict

import httpcore
import httpx

POOL_PER_KEY = 4  # idle connections kept per (scheme, IP, port, host name)
POOL_KEYS = 64  # destinations kept; the least recently used goes first
# Below the idle timeout of common servers (uvicorn and Node 5 s, Apache 5 s), so the server
# rarely closes a connection just as it is reused.
POOL_IDLE_SECONDS = 4.0

_local = threading.local()


# --- The deadline ---------------------------------------------------------------------------------


class Deadline:
    """The instant an attempt must be over (time.monotonic())."""

    def __init__(self, seconds: float):
        self.at = time.monotonic() + seconds

    def left(self, timeout_error=httpcore.TimeoutException) -> float:
        """Seconds left; `timeout_error` when there are none."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise timeout_error("the attempt's deadline has passed")
        return left


@contextlib.contextmanager
def within(deadline: Deadline):
    """Every socket operation of this thread is bounded by `deadline` until the block ends."""
    previous = getattr(_local, "deadline", None)
    _local.deadline = deadline
    try:
        yield deadline
    finally:
        _local.deadline = previous


def _time_left(timeout: float | None, timeout_error) -> float | None:
    """The timeout for one socket operation: the time left of this thread's deadline."""
    deadline = getattr(_local, "deadline", None)
    if deadline is None:
        return timeout
    left = deadline.left(timeout_error)
    return left if timeout is None else min(timeout, left)


class DeadlineStream(httpcore.NetworkStream):
    """A socket for httpcore's HTTP/1.1 connection whose every operation obeys the deadline."""

    def __init__(self, sock: socket.socket):
        self._sock = sock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with _mapped(httpcore.ReadTimeout, httpcore.ReadError):
            self._sock.settimeout(_time_left(timeout, httpcore.ReadTimeout))
            return self._sock.recv(max_bytes)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        with _mapped(httpcore.WriteTimeout, httpcore.WriteError):
            while buffer:
                self._sock.settimeout(_time_left(timeout, httpcore.WriteTimeout))
                sent = self._sock.send(buffer)
                buffer = buffer[sent:]

    def close(self) -> None:
        self._sock.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        raise NotImplementedError("TLS is set up when connecting (connect())")

    def get_extra_info(self, info: str):
        if info == "is_readable":  # idle and readable: the server closed it (or misbehaves)
            return _readable(self._sock)
        if info == "socket":
            return self._sock
        if info == "ssl_object" and isinstance(self._sock, ssl.SSLSocket):
            return self._sock._sslobj
        return None


@contextlib.contextmanager
def _mapped(timeout_error, other_error):
    try:
        yield
    except TimeoutError as exc:  # socket.timeout
        raise timeout_error(str(exc) or "timed out") from exc
    except OSError as exc:  # ssl.SSLError included (a certificate that does not match...)
        raise other_error(str(exc) or type(exc).__name__) from exc


def _readable(sock: socket.socket) -> bool:
    if sock.fileno() < 0:
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


# --- TLS --------------------------------------------------------------------------------------


_tls_lock = threading.Lock()
_tls: tuple[object, ssl.SSLContext | None] = (None, None)  # (the setting, its context)


def build_ssl_context(verify) -> ssl.SSLContext:
    """The context for TLS_VERIFY = True (certifi's trust store) or False: loads the store."""
    return httpx.create_ssl_context(verify=verify, trust_env=False)


def ssl_context(setting) -> ssl.SSLContext:
    """The process's context for `setting`, built once; another setting replaces it, and the
    pooled connections verified under the old one are closed."""
    global _tls
    current, context = _tls
    if context is not None and current is setting:
        return context
    with _tls_lock:
        current, context = _tls
        if context is None or current is not setting:
            given = isinstance(setting, ssl.SSLContext)
            context = setting if given else build_ssl_context(setting)
            _tls = (setting, context)
            POOL.clear()
    return context


# --- Connections ------------------------------------------------------------------------------


Key = tuple[str, str, int, str]  # (scheme, pinned IP, port, host name: SNI and certificate)


def connect(key: Key, context: ssl.SSLContext | None) -> httpcore.HTTP11Connection:
    """A new connection to the key's IP, TLS checked against its host name when https."""
    scheme, ip, port, host_name = key
    with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
        sock = socket.create_connection(
            (ip, port), timeout=_time_left(None, httpcore.ConnectTimeout)
        )
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                # One timeout for the whole handshake (CPython counts it down across its reads).
                sock.settimeout(_time_left(None, httpcore.ConnectTimeout))
                sock = context.wrap_socket(sock, server_hostname=host_name)
        except BaseException:
            sock.close()
            raise
    origin = httpcore.Origin(scheme.encode(), ip.encode(), port)
    return httpcore.HTTP11Connection(
        origin=origin, stream=DeadlineStream(sock), keepalive_expiry=POOL_IDLE_SECONDS
    )


class ConnectionPool:
    """Idle keep-alive connections by key, bounded (see the module's docstring); thread-safe."""

    def __init__(
        self,
        per_key=POOL_PER_KEY,
        keys=POOL_KEYS,
        idle_seconds=POOL_IDLE_SECONDS,
        clock=time.monotonic,
    ):
        self.per_key, self.keys, self.idle_seconds = per_key, keys, idle_seconds
        self.clock = clock
        self._idle: OrderedDict[Key, list[tuple[float, httpcore.HTTP11Connection]]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: Key) -> httpcore.HTTP11Connection | None:
        """An idle connection for exactly `key` that the server still holds open, or None."""
        stale = []
        found = None
        with self._lock:
            idle = self._idle.get(key, [])
            while idle and found is None:
                since, connection = idle.pop()  # the most recent: the least likely closed
                if self.clock() - since < self.idle_seconds and not connection.has_expired():
                    found = connection
                else:
                    stale.append(connection)
            if not idle:
                self._idle.pop(key, None)
        _close(stale)
        return found

    def give_back(self, key: Key, connection: httpcore.HTTP11Connection) -> None:
        """Keep `connection` for `key` if it is idle (answer read to the end, kept alive by the
        server) and there is room; close it otherwise."""
        if not connection.is_idle():
            connection.close()
            return
        now = self.clock()
        closing = []
        with self._lock:
            for other in list(self._idle):  # expired ones go, whatever their key
                kept = [
                    (since, c) for since, c in self._idle[other] if now - since < self.idle_seconds
                ]
                closing.extend(
                    c for since, c in self._idle[other] if now - since >= self.idle_seconds
                )
                if kept:
                    self._idle[other] = kept
                else:
                    del self._idle[other]
            idle = self._idle.setdefault(key, [])
            self._idle.move_to_end(key)
            if len(idle) < self.per_key:
                idle.append((now, connection))
            else:
                closing.append(connection)
            while len(self._idle) > self.keys:
                _, evicted = self._idle.popitem(last=False)
                closing.extend(c for _, c in evicted)
        _close(closing)

    def idle_count(self, key: Key | None = None) -> int:
        with self._lock:
            if key is not None:
                return len(self._idle.get(key, []))
            return sum(len(idle) for idle in self._idle.values())

    def clear(self) -> None:
        """Close every idle connection."""
        with self._lock:
            closing = [c for idle in self._idle.values() for _, c in idle]
            self._idle.clear()
        _close(closing)

    def forget(self) -> None:
        """Drop the connections without closing them (a forked child: they are its parent's)."""
        self._idle = OrderedDict()
        self._lock = threading.Lock()


def _close(connections) -> None:
    for connection in connections:
        with contextlib.suppress(Exception):
            connection.close()


POOL = ConnectionPool()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=POOL.forget)


# --- One request ------------------------------------------------------------------------------


def _closed_by_server(exc: Exception) -> bool:
    """Did a reused connection fail because the server had closed it (it was closing when we
    sent, so it never took the request)? Not a malformed answer: that one came from a server that
    read the request."""
    if isinstance(exc, httpcore.RemoteProtocolError):
        return str(exc).startswith("Server disconnected without sending a response")
    return isinstance(exc, httpcore.ReadError | httpcore.WriteError)


def exchange(
    key: Key,
    context: ssl.SSLContext | None,
    method: str,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    read_limit: int,
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Send one request on a pooled or new connection for `key` and read at most `read_limit`
    bytes of the answer (more are never read): (status, headers, body). Call it `within` the
    attempt's deadline."""
    scheme, ip, port, _host = key
    request = httpcore.Request(
        method.encode(),
        httpcore.URL(scheme=scheme.encode(), host=ip.encode(), port=port, target=target),
        headers=headers,
        content=body,
    )
    connection = POOL.take(key)
    try:
        if connection is None:
            connection = connect(key, context)
            response = connection.handle_request(request)
        else:
            try:
                response = connection.handle_request(request)
            except (httpcore.RemoteProtocolError, httpcore.NetworkError) as exc:
                if not _closed_by_server(exc):
                    raise
                connection.close()
                connection = connect(key, context)
                response = connection.handle_request(request)
        collected = bytearray()
        try:
            for chunk in response.iter_stream():
                collected.extend(chunk)
                if len(collected) > read_limit:
                    break  # keep a bounded prefix; the connection is then closed, not reused
        finally:
            response.close()
    except BaseException:
        if connection is not None:
            connection.close()
        raise
    POOL.give_back(key, connection)
    return response.status, response.headers, bytes(collected[:read_limit])
