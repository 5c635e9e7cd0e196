"""What a webhook attempt sets up, and what it reuses: one SSL context per process, kept-alive
connections only for the same (scheme, checked IP, port, host name), no resolver thread for a
host that is an address, and the one deadline on a reused connection too.

Real loopback servers (tests/integration/test_webhooks.py's RecordingServer, in HTTP/1.1 with
keep-alive where reuse is the point) and the real guard, which lets exactly the test servers
through (`allow_only`). A request records which connection carried it (the client's port).
"""

import contextlib
import ipaddress
import socketserver
import ssl
import threading
import time

import httpcore
import httpx
import pytest
import trustme

from automation.actions import webhook_transport as transport
from automation.actions import webhooks
from automation.actions.base import ActionError
from tests.integration import test_webhooks as base

# The fixtures of tests/integration/test_webhooks.py (the loopback servers, the guard's exact
# exceptions, DNS answers, fast retries), and its way of calling the action.
make_server, allow_only, dns, fast_retries = (
    base.make_server,
    base.allow_only,
    base.dns,
    base.fast_retries,
)
call = base.call


@pytest.fixture(autouse=True)
def fresh_process_state(monkeypatch):
    """Each test starts as a new worker process would: no SSL context, no pooled connection."""
    monkeypatch.setattr(transport, "_tls", (None, None))
    transport.POOL.clear()
    yield
    transport.POOL.clear()


@pytest.fixture
def tls():
    """(server context for two names, client context trusting its CA, names the server saw)."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("a.example.test", "b.example.test").configure_cert(server_context)
    names = []
    server_context.sni_callback = lambda sock, name, context: names.append(name)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return server_context, client_context, names


def connections(server) -> list:
    """The connection (client port) of each request the server got, in order."""
    return [request["connection"] for request in server.requests]


def test_the_ssl_context_is_built_once_across_many_attempts(
    make_server, allow_only, dns, tls, monkeypatch
):
    """Loading the CA bundle took ~60 ms per client on a loaded machine, for http:// too."""
    built = []
    real = httpx.create_ssl_context
    monkeypatch.setattr(
        httpx, "create_ssl_context", lambda *a, **k: built.append(1) or real(*a, **k)
    )
    server_context, client_context, _names = tls
    plain, secure = make_server(), make_server(server_context)
    allow_only(plain, secure)
    dns({"a.example.test": ["127.0.0.1"]})

    for _ in range(5):
        assert call({"url": plain.url()})["status_code"] == 200
    assert built == [], "an http:// webhook needs no SSL context"

    # The default trust store (certifi) does not know the test's CA: each attempt fails the
    # certificate check, with the one context built at the first.
    for _ in range(3):
        with pytest.raises(ActionError, match="network error"):
            call({"url": secure.url(host="a.example.test"), "maxAttempts": 1})
    assert len(built) == 1

    monkeypatch.setattr(webhooks, "TLS_VERIFY", client_context)  # a context given: used as is
    for _ in range(3):
        assert call({"url": secure.url(host="a.example.test")})["status_code"] == 200
    assert len(built) == 1

    monkeypatch.setattr(webhooks, "TLS_VERIFY", True)  # the setting changed back: built again
    with pytest.raises(ActionError, match="network error"):
        call({"url": secure.url(host="a.example.test"), "maxAttempts": 1})
    assert len(built) == 2


def test_a_tls_connection_is_reused_for_its_own_host_name_only(
    make_server, allow_only, dns, tls, monkeypatch
):
    server_context, client_context, names = tls
    monkeypatch.setattr(webhooks, "TLS_VERIFY", client_context)
    server = make_server(server_context, keep_alive=True)
    allow_only(server)
    dns({"a.example.test": ["127.0.0.1"], "b.example.test": ["127.0.0.1"]})

    for _ in range(3):
        call({"url": server.url(host="a.example.test"), "body": {"n": 1}})
    assert names == ["a.example.test"], "one handshake for three requests"
    assert len(set(connections(server))) == 1

    # Same IP and port, another name: a connection (and certificate check) of its own.
    call({"url": server.url(host="b.example.test")})
    assert names == ["a.example.test", "b.example.test"]
    first, *_, fourth = connections(server)
    assert fourth != first
    assert server.requests[-1]["headers"]["host"] == f"b.example.test:{server.port}"

    call({"url": server.url(host="a.example.test")})  # a's connection was kept
    assert names == ["a.example.test", "b.example.test"]
    assert connections(server)[-1] == first


def test_a_connection_is_never_reused_for_another_address_of_the_name(
    make_server, allow_only, monkeypatch
):
    """The name's answer changed (127.0.0.1 -> 127.0.0.2): the request goes to the address just
    checked, on a new connection, never down the one kept for the old address."""
    one = make_server(keep_alive=True)
    two = make_server(keep_alive=True, address="127.0.0.2", port=one.port)
    allow_only(one, two)
    answers = {"hooks.example.test": ["127.0.0.1"]}
    monkeypatch.setattr(
        webhooks,
        "resolve_host",
        lambda host, port: [ipaddress.ip_address(a) for a in answers[host]],
    )
    url = one.url(host="hooks.example.test")
    call({"url": url})
    call({"url": url})
    assert len(one.requests) == 2 and len(set(connections(one))) == 1

    answers["hooks.example.test"] = ["127.0.0.2"]
    call({"url": url})
    assert len(one.requests) == 2
    assert [request["connection"][1] for request in two.requests] == ["127.0.0.2"]

    # And an answer the guard refuses is refused, though a connection to the name is pooled.
    answers["hooks.example.test"] = ["10.1.2.3"]
    with pytest.raises(ActionError, match="10.1.2.3 is a private address"):
        call({"url": url})
    assert len(one.requests) + len(two.requests) == 3


def test_a_connection_whose_answer_was_not_read_to_its_end_is_not_reused(make_server, allow_only):
    server = make_server(keep_alive=True)
    allow_only(server)
    server.respond({"status": 200, "body": b"x" * 20000})  # past the read limit: cut
    call({"url": server.url()})
    server.respond({"status": 200, "body": b"short"})
    assert call({"url": server.url()})["body"] == "short"
    call({"url": server.url()})
    first, second, third = connections(server)
    assert second != first, "the cut answer's connection was closed"
    assert third == second, "an answer read to its end leaves its connection reusable"


def test_an_attempt_cut_at_its_deadline_does_not_leave_its_connection_to_the_next(
    make_server, allow_only
):
    server = make_server(keep_alive=True)
    allow_only(server)
    server.respond({"status": 200, "delay": 1.0, "body": b"late"}, {"status": 200, "body": b"ok"})
    with pytest.raises(ActionError, match="timed out"):
        call({"url": server.url(), "timeoutSeconds": 0.3, "maxAttempts": 1})
    # The late answer would be read as this request's answer on the old connection.
    assert call({"url": server.url()})["body"] == "ok"
    assert connections(server)[0] != connections(server)[1]


def test_a_connection_the_server_closed_is_replaced_without_sending_twice(
    make_server, allow_only, monkeypatch
):
    """A server closes a kept connection just as it is reused (here: right after each answer,
    with the check for a closed connection switched off so the engine does not see it first):
    the request goes once, on a new connection, in the same attempt."""
    server = make_server(keep_alive=True)
    allow_only(server)
    server.respond({"status": 200, "body": b"ok", "hang_up": True})
    monkeypatch.setattr(httpcore.HTTP11Connection, "has_expired", lambda self: False)
    call({"url": server.url()})
    assert transport.POOL.idle_count() == 1  # kept: the answer said nothing of closing

    attempts = []
    result = call({"url": server.url(), "maxAttempts": 3}, attempts=attempts)
    assert result["status_code"] == 200
    assert attempts == [1]
    assert len(server.requests) == 2
    assert connections(server)[0] != connections(server)[1]


def test_a_host_that_is_an_address_is_never_looked_up_in_a_thread(
    make_server, allow_only, monkeypatch
):
    server = make_server()
    allow_only(server)
    looked_up = []
    monkeypatch.setattr(
        webhooks,
        "resolve_in_thread",
        lambda host, port, deadline: looked_up.append(host) or [ipaddress.ip_address("127.0.0.1")],
    )
    for host in ("127.0.0.1", "localhost", "2130706433"):
        assert call({"url": server.url(host=host)})["status_code"] == 200
    assert looked_up == []
    call({"url": server.url(host="hooks.example.test")})
    assert looked_up == ["hooks.example.test"]


class LocalTcpServer:
    """A loopback TCP server on a free port, in threads of its own, until close()."""

    def serve(self, handler) -> None:
        self.tcp = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
        self.tcp.daemon_threads = True
        self.port = self.tcp.server_address[1]
        threading.Thread(target=self.tcp.serve_forever, daemon=True).start()

    def close(self):
        self.stopped.set()
        self.tcp.shutdown()
        self.tcp.server_close()


class KeepThenTrickle(LocalTcpServer):
    """Answers its connection's first request at once (HTTP/1.1, kept alive), then trickles the
    next answer's headers a byte every 0.2 s for up to 20 s."""

    def __init__(self):
        self.stopped = threading.Event()
        self.requests = []  # (client port, request number on that connection)
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                with contextlib.suppress(OSError):
                    for number in (1, 2):
                        data = b""
                        while b"\r\n\r\n" not in data:
                            chunk = self.request.recv(65536)
                            if not chunk:
                                return
                            data += chunk
                        server.requests.append((self.client_address[1], number))
                        if number == 1:
                            self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            continue
                        self.request.sendall(b"HTTP/1.1 200 OK\r\n")
                        give_up = time.monotonic() + 20
                        while time.monotonic() < give_up and not server.stopped.is_set():
                            self.request.sendall(b"X")
                            server.stopped.wait(0.2)

        self.serve(Handler)


def test_a_server_trickling_on_a_reused_connection_is_cut_at_the_deadline(allow_only):
    server = KeepThenTrickle()
    try:
        allow_only(server)
        url = f"http://127.0.0.1:{server.port}/hook"
        assert call({"url": url})["body"] == "ok"
        started = time.monotonic()
        with pytest.raises(ActionError, match=r"timed out after 1 s \(attempt 1 of 1\)"):
            call({"url": url, "timeoutSeconds": 1, "maxAttempts": 1})
        assert time.monotonic() - started >= 1
        (first_port, _), (second_port, number) = server.requests
        assert (second_port, number) == (first_port, 2), "the second went down the kept connection"
    finally:
        server.close()


class TricklingHandshake(LocalTcpServer):
    """Takes the TLS ClientHello, then answers with a TLS record header announcing 16 KB and
    sends its bytes one every 0.2 s: a handshake that never stalls long enough for a per-read
    timeout, for up to 20 s."""

    def __init__(self):
        self.stopped = threading.Event()
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                with contextlib.suppress(OSError):
                    self.request.recv(65536)
                    self.request.sendall(b"\x16\x03\x03\x40\x00")
                    give_up = time.monotonic() + 20
                    while time.monotonic() < give_up and not server.stopped.is_set():
                        self.request.sendall(b"\x02")
                        server.stopped.wait(0.2)

        self.serve(Handler)


def test_a_tls_handshake_trickled_byte_by_byte_is_cut_at_the_deadline(allow_only, dns):
    server = TricklingHandshake()
    try:
        allow_only(server)
        dns({"a.example.test": ["127.0.0.1"]})
        started = time.monotonic()
        with pytest.raises(ActionError, match=r"timed out after 1 s \(attempt 1 of 1\)"):
            call(
                {
                    "url": f"https://a.example.test:{server.port}/hook",
                    "timeoutSeconds": 1,
                    "maxAttempts": 1,
                }
            )
        assert time.monotonic() - started >= 1
    finally:
        server.close()


def test_header_values_go_as_utf8_and_the_answer_is_asked_unencoded(make_server, allow_only):
    """A non-ASCII header value used to fail the run (httpx encodes header values as ASCII); the
    kept body is the answer's own bytes, so no compression is asked for."""
    server = make_server()
    allow_only(server)
    assert call({"url": server.url(), "headers": {"X-Note": "café ✓"}})["status_code"] == 200
    (request,) = server.requests
    # http.server reads header bytes as latin-1.
    assert request["headers"]["x-note"].encode("latin-1").decode() == "café ✓"
    assert request["headers"]["accept-encoding"] == "identity"


def test_the_rules_own_accept_and_user_agent_replace_the_defaults_whatever_their_case(
    make_server, allow_only
):
    server = make_server()
    allow_only(server)
    call({"url": server.url(), "headers": {"accept": "application/json", "USER-AGENT": "mine/1"}})
    (request,) = server.requests
    sent = request["raw_headers"]
    assert [value for name, value in sent if name.lower() == "accept"] == ["application/json"]
    assert [value for name, value in sent if name.lower() == "user-agent"] == ["mine/1"]
