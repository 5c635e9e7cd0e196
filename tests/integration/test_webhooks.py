"""CALL_WEBHOOK against a real HTTP server started by the test, on loopback.

The SSRF guard stays on (AUTOMATION_WEBHOOK_ALLOW_PRIVATE_NETWORKS=false). To reach its own
server the test patches `webhooks.check_address` so that exactly the test server's
(127.0.0.1, port) passes and every other address goes through the real guard (`allow_only`).
DNS is the outside world: `webhooks.resolve_host` is patched to answer for made-up host names.
No request ever leaves loopback: refused addresses are refused before any connection.
"""

import contextlib
import datetime
import hashlib
import hmac
import ipaddress
import itertools
import json
import socketserver
import ssl
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trustme

from automation.actions import webhooks
from automation.actions.base import MASK, ActionError
from automation.actions.handlers import get_handler, parameter_errors
from automation.core.choices import ActionType
from automation.core.context import RunContext

LOOPBACK = ipaddress.ip_address("127.0.0.1")
RUN_KEY = "5f2b1c9e-8d4a-4f6b-9c3e-2a7d1e0b4c58"  # the run log's run_uuid


class RecordingServer:
    """A loopback HTTP server that records every request and answers from a script."""

    def __init__(self, tls_context=None, keep_alive=False, address="127.0.0.1", port=0):
        """keep_alive: answer in HTTP/1.1 and keep the connection open (a server the engine may
        reuse connections to); otherwise HTTP/1.0, one request per connection."""
        self.requests: list[dict] = []
        self.responses: list[dict] = []  # consumed in order; the last one repeats
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                server.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "raw_headers": list(self.headers.items()),
                        "body": self.rfile.read(length),
                        # (client port, this server's address): which connection carried it
                        "connection": (self.client_address[1], self.server.server_address[0]),
                    }
                )
                spec = server.responses.pop(0) if len(server.responses) > 1 else server.responses[0]
                time.sleep(spec.get("delay", 0))
                payload = spec.get("body", b"ok")
                self.send_response(spec.get("status", 200))
                for name, value in spec.get("headers", {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                # The client may have given up already (timeout test).
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(payload)
                if spec.get("hang_up"):  # keep-alive said, yet closed (as at an idle timeout)
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer((address, port), Handler)
        self.httpd.daemon_threads = True
        self.scheme = "http"
        if tls_context is not None:
            self.httpd.socket = tls_context.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.address, self.port = self.httpd.server_address[:2]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path="/hook", host="127.0.0.1"):
        return f"{self.scheme}://{host}:{self.port}{path}"

    def respond(self, *specs):
        self.responses = list(specs)


@pytest.fixture
def make_server():
    servers = []

    def make(tls_context=None, **options):
        server = RecordingServer(tls_context, **options)
        server.respond({"status": 200, "body": b'{"ok":true}'})
        server.thread.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.httpd.shutdown()
        server.httpd.server_close()


@pytest.fixture
def server(make_server):
    return make_server()


@pytest.fixture
def allow_only(monkeypatch):
    """allow_only(server): the guard accepts that server's exact address:port, nothing else."""
    original = webhooks.check_address

    def allow(*servers):
        allowed = {(ipaddress.ip_address(getattr(s, "address", LOOPBACK)), s.port) for s in servers}

        def check(ip, port):
            if (ip, port) not in allowed:
                original(ip, port)

        monkeypatch.setattr(webhooks, "check_address", check)

    return allow


@pytest.fixture
def dns(monkeypatch):
    """dns({"hooks.example.test": ["127.0.0.1"]}): the answers of the outside world's DNS."""
    lookups = []

    def install(table):
        def resolve(host, port):
            lookups.append(host)
            if host not in table:
                raise OSError(f"no such host {host}")
            return [ipaddress.ip_address(a) for a in table[host]]

        monkeypatch.setattr(webhooks, "resolve_host", resolve)
        return lookups

    return install


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch, settings):
    settings.AUTOMATION_WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    monkeypatch.setattr(webhooks, "RETRY_BASE_SECONDS", 0.01)


def context(**extra):
    return RunContext(
        organization_id=1,
        rule_id=3,
        rule_name="Ping",
        trigger="EVENT",
        event="UPDATED",
        model="catalog.product",
        object_id="42",
        object={"id": 42, "name": "Lamp", "stock": 0},
        log_id=981,
        run_key=RUN_KEY,
        action_order=2,
        **extra,
    )


def call(parameters, ctx=None, attempts=None):
    on_attempt = attempts.append if attempts is not None else None
    return get_handler(ActionType.CALL_WEBHOOK).execute(
        parameters, ctx or context(), on_attempt=on_attempt
    )


def test_the_request_carries_the_contract_headers_and_a_verifiable_signature(
    server, allow_only, dns
):
    allow_only(server)
    lookups = dns({"hooks.example.test": ["127.0.0.1"]})
    before = int(time.time())
    result = call(
        {
            "url": server.url("/hook?x=1", host="hooks.example.test"),
            "headers": {"Authorization": "Bearer abc"},
            "body": {"id": "{{ object.id }}", "text": "{{ object.name }} is out"},
            "secret": "s3cret",
        }
    )
    (request,) = server.requests
    headers = request["headers"]
    assert request["method"] == "POST"
    assert request["path"] == "/hook?x=1"
    # Connected to the checked IP, yet the server sees the original host name.
    assert headers["host"] == f"hooks.example.test:{server.port}"
    assert lookups == ["hooks.example.test"]
    assert headers["content-type"] == "application/json"
    assert headers["authorization"] == "Bearer abc"
    assert headers["idempotency-key"] == f"{RUN_KEY}-2"
    timestamp = headers["x-automation-timestamp"]
    assert before <= int(timestamp) <= int(time.time())
    assert json.loads(request["body"]) == {"id": 42, "text": "Lamp is out"}
    expected = hmac.new(b"s3cret", timestamp.encode() + b"." + request["body"], hashlib.sha256)
    assert headers["x-automation-signature"] == "sha256=" + expected.hexdigest()
    assert result == {
        "url": server.url("/hook?x=1", host="hooks.example.test"),
        "status_code": 200,
        "body": '{"ok":true}',
        "attempts": 1,
        "idempotency_key": f"{RUN_KEY}-2",
    }


def test_no_secret_no_signature_and_method_respected(server, allow_only):
    allow_only(server)
    call({"url": server.url(), "method": "PUT"})
    (request,) = server.requests
    assert request["method"] == "PUT"
    assert request["body"] == b""
    assert "x-automation-signature" not in request["headers"]


def test_retries_on_5xx_then_succeeds_with_the_same_idempotency_key(server, allow_only):
    allow_only(server)
    server.respond({"status": 500}, {"status": 503}, {"status": 201, "body": b"created"})
    attempts = []
    result = call({"url": server.url(), "body": {"a": 1}, "maxAttempts": 3}, attempts=attempts)
    assert attempts == [1, 2, 3]
    assert result["attempts"] == 3
    assert result["status_code"] == 201
    assert result["body"] == "created"
    assert len(server.requests) == 3
    assert {r["headers"]["idempotency-key"] for r in server.requests} == {f"{RUN_KEY}-2"}


def test_5xx_on_every_attempt_fails_with_the_result_attached(server, allow_only):
    allow_only(server)
    server.respond({"status": 502, "body": b"bad gateway"})
    attempts = []
    with pytest.raises(ActionError) as raised:
        call({"url": server.url(), "maxAttempts": 2}, attempts=attempts)
    assert "HTTP 502" in str(raised.value)
    assert "attempt 2 of 2" in str(raised.value)
    assert raised.value.result["status_code"] == 502
    assert raised.value.result["body"] == "bad gateway"
    assert raised.value.result["attempts"] == 2
    assert attempts == [1, 2]
    assert len(server.requests) == 2


def test_4xx_fails_at_once_without_retry(server, allow_only):
    allow_only(server)
    server.respond({"status": 400, "body": b"no"})
    attempts = []
    with pytest.raises(ActionError, match="HTTP 400") as raised:
        call({"url": server.url(), "maxAttempts": 5}, attempts=attempts)
    assert attempts == [1]
    assert len(server.requests) == 1
    assert raised.value.result["attempts"] == 1


def test_a_slow_server_times_out(server, allow_only):
    allow_only(server)
    server.respond({"status": 200, "delay": 1.5})
    # Without the timeout the answer would come, 200, after 1.5 s: no error at all.
    with pytest.raises(ActionError, match="timed out") as raised:
        call({"url": server.url(), "timeoutSeconds": 0.3, "maxAttempts": 1})
    assert raised.value.result["attempts"] == 1
    assert raised.value.result["status_code"] is None


class TricklingServer:
    """A loopback server that holds a webhook as long as it can without ever going quiet.

    "headers": the status line and headers a byte every TRICKLE_SECONDS, endlessly; "body": the
    headers at once, then the body a byte at a time; "silent": it takes the connection and the
    request and never answers. Each gives up after GIVE_UP_SECONDS, which bounds the test when
    the client does not (before the one deadline per attempt, "headers" held it that long).
    """

    TRICKLE_SECONDS = 0.2
    GIVE_UP_SECONDS = 20

    def __init__(self, mode):
        self.stopped = threading.Event()
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                self.request.recv(65536)  # the request: small, sent at once
                if mode == "silent":
                    server.stopped.wait(server.GIVE_UP_SECONDS)
                    return
                if mode == "body":
                    self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                    stream = itertools.repeat(b"x")
                else:
                    start = b"HTTP/1.1 200 OK\r\nX-Slow: "
                    stream = itertools.chain(
                        (start[i : i + 1] for i in range(len(start))), itertools.repeat(b"a")
                    )
                give_up = time.monotonic() + server.GIVE_UP_SECONDS
                with contextlib.suppress(OSError):  # the client hung up: done
                    while time.monotonic() < give_up and not server.stopped.is_set():
                        self.request.sendall(next(stream))
                        server.stopped.wait(server.TRICKLE_SECONDS)

        self.tcp = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.tcp.daemon_threads = True
        self.port = self.tcp.server_address[1]
        threading.Thread(target=self.tcp.serve_forever, daemon=True).start()

    def url(self):
        return f"http://127.0.0.1:{self.port}/hook"

    def close(self):
        self.stopped.set()
        self.tcp.shutdown()
        self.tcp.server_close()


@pytest.fixture
def trickling_server():
    servers = []

    def make(mode):
        servers.append(TricklingServer(mode))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


@pytest.mark.parametrize("mode", ["headers", "body", "silent"])
def test_one_deadline_bounds_an_attempt_however_the_server_stalls(
    trickling_server, allow_only, mode
):
    """timeoutSeconds bounds an attempt as a whole: a byte every 0.2 s resets httpx's per-read
    timeout forever, and two such servers used to hold every worker."""
    server = trickling_server(mode)
    allow_only(server)
    started = time.monotonic()
    with pytest.raises(ActionError, match=r"timed out after 1 s \(attempt 1 of 1\)") as raised:
        call({"url": server.url(), "timeoutSeconds": 1, "maxAttempts": 1})
    # Not early; and not an upper bound in seconds (a busy machine stretches them): without the
    # one deadline "headers" and "body" would go on until the server hangs up after 20 s, with
    # another error than the deadline's above.
    assert time.monotonic() - started >= 1
    assert raised.value.result["status_code"] is None


def test_a_network_error_is_retried(allow_only, make_server):
    server = make_server()
    allow_only(server)
    server.httpd.shutdown()
    server.httpd.server_close()  # nothing listens on the port any more
    attempts = []
    with pytest.raises(ActionError, match="network error"):
        call({"url": server.url(), "maxAttempts": 2}, attempts=attempts)
    assert attempts == [1, 2]


def test_the_response_body_kept_is_truncated(server, allow_only):
    allow_only(server)
    server.respond({"status": 200, "body": b"x" * 20000})
    result = call({"url": server.url()})
    assert len(result["body"]) == webhooks.RESPONSE_BODY_LIMIT


def test_https_connects_to_the_checked_ip_with_the_host_name_for_sni_and_certificate(
    make_server, allow_only, dns, monkeypatch
):
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("hooks.example.test").configure_cert(server_context)
    server_names = []
    server_context.sni_callback = lambda sock, name, context: server_names.append(name)
    server = make_server(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    monkeypatch.setattr(webhooks, "TLS_VERIFY", client_context)
    allow_only(server)
    dns({"hooks.example.test": ["127.0.0.1"]})

    result = call({"url": server.url(host="hooks.example.test"), "body": {"a": 1}})
    assert result["status_code"] == 200
    assert server_names == ["hooks.example.test"]
    assert server.requests[0]["headers"]["host"] == f"hooks.example.test:{server.port}"

    # The certificate is checked against the URL's host: the same server by IP does not match.
    with pytest.raises(ActionError, match="network error"):
        call({"url": server.url(host="127.0.0.1"), "maxAttempts": 1})
    assert len(server.requests) == 1


# --- SSRF -----------------------------------------------------------------------------------------


def test_loopback_is_refused_when_private_networks_are_not_allowed(server):
    attempts = []
    with pytest.raises(ActionError, match="127.0.0.1 is a loopback address") as raised:
        call({"url": server.url(), "maxAttempts": 3}, attempts=attempts)
    assert server.requests == []
    assert attempts == []  # an IP literal is refused before any attempt, and never retried
    errors = parameter_errors(ActionType.CALL_WEBHOOK, {"url": server.url()}, None)
    # Both messages tell the operator which setting would allow it.
    for message in (str(raised.value), *errors["url"]):
        assert "set AUTOMATION_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true to allow them" in message


def test_a_rendered_url_is_checked_again(server):
    ctx = context()
    ctx.object = {**ctx.object, "host": f"127.0.0.1:{server.port}"}
    params = {"url": "http://{{ object.host }}/hook"}
    assert parameter_errors(ActionType.CALL_WEBHOOK, params, None) == {}
    with pytest.raises(ActionError, match="loopback"):
        call(params, ctx)
    assert server.requests == []


def test_a_host_name_resolving_to_a_private_address_is_refused(server, dns):
    dns(
        {
            "internal.example.test": ["10.1.2.3"],
            "mixed.example.test": ["93.184.216.34", "127.0.0.1"],
        }
    )
    with pytest.raises(ActionError, match="10.1.2.3 is a private address"):
        call({"url": "http://internal.example.test/hook"})
    attempts = []
    with pytest.raises(ActionError, match="127.0.0.1 is a loopback address"):
        call({"url": server.url(host="mixed.example.test"), "maxAttempts": 3}, attempts=attempts)
    assert attempts == [1]  # a refusal is final, never retried
    assert server.requests == []


def test_a_redirect_to_a_private_address_is_refused(make_server, allow_only, dns):
    public, private = make_server(), make_server()
    allow_only(public)
    dns({"hooks.example.test": ["127.0.0.1"]})
    public.respond({"status": 302, "headers": {"Location": private.url("/steal")}})
    with pytest.raises(ActionError, match="loopback") as raised:
        call({"url": public.url(host="hooks.example.test")})
    assert len(public.requests) == 1
    assert private.requests == []  # never connected
    assert raised.value.result["attempts"] == 1

    public.requests.clear()
    public.respond(
        {"status": 307, "headers": {"Location": "http://169.254.169.254/latest/meta-data"}}
    )
    with pytest.raises(ActionError, match="cloud metadata"):
        call({"url": public.url(host="hooks.example.test")})


def test_redirects_are_followed_and_secret_headers_stay_with_their_host(server, allow_only, dns):
    allow_only(server)
    dns({"hooks.example.test": ["127.0.0.1"]})
    server.respond(
        {"status": 301, "headers": {"Location": "/moved"}},
        {"status": 303, "headers": {"Location": server.url("/other")}},  # another host name
        {"status": 200, "body": b"done"},
    )
    result = call(
        {
            "url": server.url(host="hooks.example.test"),
            "headers": {"X-Token": "t0ken"},
            "body": {"a": 1},
            "secret": "k",
        }
    )
    assert result["status_code"] == 200
    assert result["attempts"] == 1
    first, moved, other = server.requests
    assert (first["method"], moved["method"], other["method"]) == ("POST", "GET", "GET")
    assert moved["path"] == "/moved"
    assert moved["headers"]["x-token"] == "t0ken"  # same origin
    assert "x-token" not in other["headers"]  # another origin: secret headers dropped
    assert other["headers"]["host"] == f"127.0.0.1:{server.port}"


def test_a_redirect_to_another_origin_carries_neither_the_headers_nor_the_signature(
    make_server, allow_only
):
    """The signature is the proof that a request comes from us: another origin must not get one
    to replay, any more than the rule's header values."""
    configured, elsewhere = make_server(), make_server()  # another port: another origin
    allow_only(configured, elsewhere)
    configured.respond({"status": 307, "headers": {"Location": elsewhere.url("/echo")}})
    result = call(
        {
            "url": configured.url(),
            "headers": {"X-Token": "header-secret-value"},
            "body": {"a": 1},
            "secret": "signing-key-value",
        }
    )
    assert result["status_code"] == 200
    (sent,) = configured.requests
    (redirected,) = elsewhere.requests
    assert sent["headers"]["x-token"] == "header-secret-value"
    assert sent["headers"]["x-automation-signature"].startswith("sha256=")
    assert redirected["method"] == "POST" and redirected["body"] == b'{"a":1}'  # 307 keeps both
    assert "x-token" not in redirected["headers"]
    assert "x-automation-signature" not in redirected["headers"]


def test_secrets_echoed_by_the_server_are_masked_in_the_result(server, allow_only):
    """Defense in depth: a result is shown to every member (VIEWER included), so a server that
    echoes what it got must not reveal the rule's secrets there."""
    allow_only(server)
    parameters = {
        "url": server.url(),
        "headers": {"Authorization": "Bearer header-secret-value", "X-Short": "abc"},
        "secret": "signing-key-value",
    }
    echo = b"got Bearer header-secret-value, key signing-key-value, short abc"
    server.respond({"status": 200, "body": echo})
    assert call(parameters)["body"] == f"got {MASK}, key {MASK}, short abc"

    server.respond({"status": 500, "body": echo})
    with pytest.raises(ActionError) as raised:
        call({**parameters, "maxAttempts": 1})
    assert raised.value.result["body"] == f"got {MASK}, key {MASK}, short abc"


@pytest.mark.parametrize("cut_after", [1, 8, 16])
def test_a_secret_echoed_across_the_kept_length_is_masked_too(server, allow_only, cut_after):
    """The body is kept up to RESPONSE_BODY_LIMIT bytes: a secret the limit cuts through must not
    be shown up to the cut."""
    allow_only(server)
    secret = "signing-key-value-0123456789"
    padding = b"x" * (webhooks.RESPONSE_BODY_LIMIT - cut_after)
    server.respond({"status": 200, "body": padding + secret.encode() + b" and more"})
    body = call({"url": server.url(), "secret": secret})["body"]
    assert secret[:cut_after] not in body[len(padding) :]
    assert body.startswith(padding.decode())
    assert len(body.encode()) <= webhooks.RESPONSE_BODY_LIMIT


def test_too_many_redirects(server, allow_only):
    allow_only(server)
    server.respond({"status": 302, "headers": {"Location": "/again"}})
    with pytest.raises(ActionError, match="Too many redirects"):
        call({"url": server.url()})
    assert len(server.requests) == webhooks.MAX_REDIRECTS + 1


def test_the_setting_allows_private_networks_but_never_metadata(server, settings):
    settings.AUTOMATION_WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    assert call({"url": server.url()})["status_code"] == 200
    for address in ("169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254"):
        reason = webhooks.address_refusal(ipaddress.ip_address(address))
        assert reason.endswith("is a cloud metadata address"), reason


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "169.254.1.1",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "::1",
        "::",
        "fe80::1",
        "fd00:ec2::254",
        "fc00::1",
        "::ffff:127.0.0.1",
        "2002:7f00:1::",  # 6to4 wrapping 127.0.0.1
        "ff02::1",
    ],
)
def test_non_public_addresses_are_refused(address):
    assert webhooks.address_refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address):
    assert webhooks.address_refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "file:///etc/passwd", "http://user:pw@example.com/", "/relative"]
)
def test_only_absolute_http_urls_without_credentials(url):
    assert "url" in parameter_errors(ActionType.CALL_WEBHOOK, {"url": url}, None)


def test_engine_headers_cannot_be_overridden():
    errors = parameter_errors(
        ActionType.CALL_WEBHOOK,
        {
            "url": "https://example.com/",
            "headers": {"Host": "x", "Idempotency-Key": "y", "Bad\nName": "z"},
        },
        None,
    )
    assert set(errors) == {"headers.Host", "headers.Idempotency-Key", "headers.Bad\nName"}


# --- Dry run --------------------------------------------------------------------------------------


def test_dry_run_sends_nothing_and_masks_secrets(server, allow_only):
    allow_only(server)
    result = get_handler(ActionType.CALL_WEBHOOK).dry_run(
        {
            "url": server.url(),
            "headers": {"Authorization": "Bearer very-secret"},
            "body": {"n": "{{ object.name }}"},
            "secret": "hmac-key",
        },
        context(),
    )
    assert server.requests == []
    assert result == {
        "would": "call",
        "method": "POST",
        "url": server.url(),
        "headers": {"Authorization": MASK},
        "body": {"n": "Lamp"},
        "signed": True,
        "timeoutSeconds": 10.0,
        "maxAttempts": 3,
    }
    shown = json.dumps(result)
    assert "very-secret" not in shown and "hmac-key" not in shown


def test_dry_run_fails_on_a_missing_variable_or_a_refused_url():
    handler = get_handler(ActionType.CALL_WEBHOOK)
    with pytest.raises(ActionError, match="'object.nme'"):
        handler.dry_run({"url": "https://example.com/", "body": "{{ object.nme }}"}, context())
    with pytest.raises(ActionError, match="loopback"):
        handler.dry_run({"url": "http://127.0.0.1:9/x"}, context())


# --- The Idempotency-Key of real runs ------------------------------------------------------------


class WorkerKilled(BaseException):
    """Stands for SIGKILL after the request went out and before its result was recorded."""


@pytest.mark.django_db
def test_the_idempotency_key_names_the_run_not_its_log_id(
    server, allow_only, organization, monkeypatch
):
    """Stable across the attempts and the resumption of one run; never repeated by another
    run, even one whose log gets the same id (another deployment, a restored database: two
    deployments once both sent "2-1" for different runs)."""
    from automation.core.models import AutomationLog
    from automation.runs import sweeper
    from automation.runs.execute import execute_run
    from automation.triggers.outbox import emit_event
    from tests.factories import AutomationRuleFactory, ProductFactory

    allow_only(server)
    server.respond({"status": 503}, {"status": 200})
    webhook = {"url": server.url(), "body": {"n": 1}, "maxAttempts": 2}
    AutomationRuleFactory(
        organization=organization,
        actions=[{"action_type": ActionType.CALL_WEBHOOK, "parameters": webhook}],
    )
    product = ProductFactory(organization=organization)

    def pending_run():
        (log,) = emit_event(product, "UPDATED", {"stock": {"old": 1, "new": 2}})
        return log

    log = pending_run()
    real_send = webhooks.send

    def send_then_die(request, on_attempt=None):
        real_send(request, on_attempt=on_attempt)
        raise WorkerKilled

    monkeypatch.setattr(webhooks, "send", send_then_die)
    with pytest.raises(WorkerKilled):
        execute_run(log.pk)
    monkeypatch.setattr(webhooks, "send", real_send)
    AutomationLog.objects.filter(pk=log.pk).update(
        heartbeat_at=log.created_at - datetime.timedelta(minutes=10),
        created_at=log.created_at - datetime.timedelta(minutes=10),
    )
    assert sweeper.sweep()["revived"] == 1
    execute_run(log.pk)  # the resumed run sends again: at least once

    log.refresh_from_db()
    assert log.status == "SUCCEEDED"
    key = f"{log.run_uuid}-0"
    assert log.action_logs[0]["result"]["idempotency_key"] == key
    sent = [request["headers"]["idempotency-key"] for request in server.requests]
    assert sent == [key, key, key], "two attempts, then the resumed run's one"
    assert uuid.UUID(key.removesuffix("-0")).version == 4

    # A database restored to before this run: the next run's log gets the same id again.
    old_id = log.pk
    AutomationLog.objects.filter(pk=old_id).delete()
    again = pending_run()
    AutomationLog.objects.filter(pk=again.pk).update(id=old_id)
    server.requests.clear()
    execute_run(old_id)

    (request,) = server.requests
    assert request["headers"]["idempotency-key"] != key
    assert request["headers"]["idempotency-key"] == f"{AutomationLog.objects.get().run_uuid}-0"


@pytest.mark.django_db
def test_a_log_written_before_run_uuid_existed_still_has_a_stable_key_of_its_own(organization):
    from automation.core.models import AutomationLog
    from tests.factories import AutomationLogFactory, AutomationRuleFactory

    rule = AutomationRuleFactory(organization=organization)
    first, second = AutomationLogFactory(rule=rule), AutomationLogFactory(rule=rule)
    AutomationLog.objects.update(run_uuid=None)  # as the migration leaves older rows
    first, second = AutomationLog.objects.get(pk=first.pk), AutomationLog.objects.get(pk=second.pk)
    assert first.run_key() == AutomationLog.objects.get(pk=first.pk).run_key()
    assert first.run_key() != second.run_key()
    assert str(first.pk) not in first.run_key().split("-")
