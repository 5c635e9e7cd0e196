"""Outgoing webhook requests: signing, retries, and the guard against server-side request forgery.

A webhook URL is user input that the server fetches, so it could aim at the server's own network
(127.0.0.1, 10.x, the cloud metadata endpoint). The guard refuses every address that is not
globally routable, unless settings.AUTOMATION_WEBHOOK_ALLOW_PRIVATE_NETWORKS is on; cloud metadata
addresses are refused even then. It checks the address actually connected to: the host is
resolved here (`resolve_host`), every resolved address is checked, and the request is sent to
that checked IP with the original Host header and TLS server name (SNI, certificate check), so a
DNS answer that changes between check and connect (DNS rebinding) cannot slip through. Redirects
are followed by hand, at most MAX_REDIRECTS, each hop checked the same way; a redirect to another
origin drops the rule's own headers and the signature (both are meant for the configured host).
A server that echoes a secret (the signing key, a header value) gets it masked in the result.

Retries: network errors, timeouts, 5xx, 408 and 429 are retried with exponential backoff and
jitter, up to the action's maxAttempts; any other status fails at once; a refused destination is
never retried. Each attempt has `timeout` seconds in all, enforced as one deadline (DNS,
connect, TLS, redirects, headers and body included), and at most RESPONSE_BODY_LIMIT bytes of the
answer are read and kept.

The request itself travels through actions/webhook_transport.py: synchronous, in the worker's
thread, with one SSL context per process and kept-alive connections reused only for the same
(scheme, checked IP, port, host name). Every attempt resolves and checks again before it looks
for a connection, so reuse never skips the guard.

Tests: `resolve_host` is the module's view of the outside world's DNS and may be patched;
`check_address(ip, port)` is the guard, and a test that must reach its own loopback server while
private networks stay refused patches it to accept exactly that server's (address, port) and
delegate everything else to the original (see tests/integration/test_webhooks.py).
"""

import concurrent.futures
import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urljoin

import httpcore
import httpx
from django.conf import settings

from automation.actions import webhook_transport as transport
from observability import metrics

logger = logging.getLogger("automation.actions.webhooks")

MAX_REDIRECTS = 5
RESPONSE_BODY_LIMIT = 4096  # bytes kept in the result
RETRY_BASE_SECONDS = 0.5  # backoff: base * 2^(attempt-1), full jitter, capped
RETRY_MAX_SECONDS = 10.0
RETRYABLE_STATUS = {408, 429}  # besides every 5xx
REDACTED = "********"  # what a secret echoed in an answer is replaced with
REDACT_MIN_LENGTH = 8
USER_AGENT = "automation-rule-engine-webhook/1"
# Sent unless the rule's headers name them (in any case). The kept prefix of an answer is its
# own bytes: no compression is asked for.
DEFAULT_HEADERS = {"User-Agent": USER_AGENT, "Accept": "*/*", "Accept-Encoding": "identity"}
# Certificates are verified against the URL's host name. True = the certifi trust store; a test
# that serves HTTPS with its own CA sets an ssl.SSLContext trusting that CA here.
TLS_VERIFY = True

# Headers the engine sets itself; a rule may not override them.
RESERVED_HEADERS = {
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "x-automation-timestamp",
    "x-automation-signature",
    "idempotency-key",
}

# Cloud instance-metadata endpoints: refused even when private networks are allowed.
METADATA_ADDRESSES = {
    ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, DigitalOcean...
    ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    ipaddress.ip_address("fd00:ec2::254"),  # AWS IMDS over IPv6
}

_REDIRECT_STATUS = {301, 302, 303, 307, 308}


class WebhookRefused(Exception):
    """The destination is not allowed (scheme, host or address): never retried."""


class WebhookError(Exception):
    """The webhook failed for good; `result` describes the last attempt."""

    def __init__(self, message: str, result: dict):
        super().__init__(message)
        self.result = result


@dataclass
class WebhookRequest:
    url: str
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    secret: str | None = None
    idempotency_key: str = ""
    timeout: float = 10.0
    max_attempts: int = 3


# --- The guard ------------------------------------------------------------------------------------


def resolve_host(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address `host` resolves to (the outside world: tests patch this function)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


def address_refusal(ip) -> str | None:
    """Why `ip` may not be called, or None when it may.

    A private address is refused with the name of the setting that allows it, for the operator
    of a deployment whose webhooks do call internal services; metadata addresses never pass, not
    even wrapped in an IPv6 address.
    """
    if any(address in METADATA_ADDRESSES for address in _forms(ip)):
        return f"{ip} is a cloud metadata address"
    if settings.AUTOMATION_WEBHOOK_ALLOW_PRIVATE_NETWORKS:
        return None
    reasons = (_non_public_reason(address, ip) for address in _forms(ip))
    reason = next((reason for reason in reasons if reason), None)
    if reason is None:
        return None
    return (
        f"{reason}; webhooks may not call private networks "
        "(set AUTOMATION_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true to allow them)"
    )


def _forms(ip) -> list:
    """The IPv4 addresses `ip` carries (::ffff:127.0.0.1, 6to4, Teredo), then `ip`: all judged."""
    forms = [getattr(ip, name, None) for name in ("ipv4_mapped", "sixtofour")]
    forms.extend(getattr(ip, "teredo", None) or ())
    return [form for form in forms if form is not None] + [ip]


def _non_public_reason(address, ip) -> str | None:
    """Why `address` (`ip` itself or an address it carries) is not public, or None."""
    for kind, test in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
    ):
        if test:
            if address == ip:
                return f"{ip} is a {kind} address"
            return f"{ip} carries {address}, a {kind} address"
    if not address.is_global:
        return f"{ip} is not a public address"
    return None


def check_address(ip, port: int) -> None:
    """Raise WebhookRefused when the request may not connect to (ip, port)."""
    reason = address_refusal(ip)
    if reason:
        raise WebhookRefused(f"Refused to call {_netloc(ip, port)}: {reason}.")


@functools.lru_cache(maxsize=1024)
def check_url_syntax(url: str) -> httpx.URL:
    """The parsed URL when it is an absolute http(s) URL with a host; WebhookRefused otherwise.

    Kept per URL (a refusal is not kept): a run's call parsed its URL twice, when the action
    was prepared and when the request left, and a rule's calls all go to the same few URLs
    (httpx.URL is immutable)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise WebhookRefused(f"Invalid URL {url!r}: {exc}.") from None
    if parsed.scheme not in ("http", "https"):
        raise WebhookRefused(f"Invalid URL {url!r}: only http and https URLs can be called.")
    if not parsed.host:
        raise WebhookRefused(f"Invalid URL {url!r}: it has no host.")
    if parsed.userinfo:
        raise WebhookRefused(
            f"Invalid URL {url!r}: credentials in the URL are not allowed; use a header."
        )
    return parsed


def literal_address(host: str):
    """The IP when `host` names one without DNS, else None.

    Besides IP literals that is every legacy IPv4 form the system resolver accepts (2130706433,
    0x7f.1, 127.1: inet_aton) and the localhost names (RFC 6761), so a rule cannot hide a private
    address behind them until it runs.
    """
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return ipaddress.ip_address("127.0.0.1")
    if all(char in "0123456789abcdefx." for char in name):
        try:
            return ipaddress.ip_address(socket.inet_aton(name))
        except OSError:
            return None
    return None


def pinned_address(url: httpx.URL, deadline: transport.Deadline):
    """Resolve the URL's host, check every address, and return the one to connect to.

    A host that names an address (literal_address) is not looked up at all; a name is resolved
    in a thread the attempt waits for until its deadline (the resolver cannot be interrupted: an
    abandoned lookup ends on its own).
    """
    port = url.port or (443 if url.scheme == "https" else 80)
    ip = literal_address(url.host)
    if ip is not None:
        addresses = [ip]
    else:
        try:
            addresses = resolve_in_thread(url.raw_host.decode("ascii"), port, deadline)
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"Could not resolve {url.host}: {exc}") from exc
        if not addresses:
            raise httpcore.ConnectError(f"Could not resolve {url.host}: no address")
    for address in addresses:  # every one: a mixed answer is refused whole
        check_address(address, port)
    return addresses[0]


RESOLVER_THREADS = 8
_resolver_lock = threading.Lock()
_resolver: concurrent.futures.ThreadPoolExecutor | None = None


def resolve_in_thread(host: str, port: int, deadline: transport.Deadline) -> list:
    """resolve_host(host, port) in the resolver's threads, waited for until the deadline."""
    global _resolver
    with _resolver_lock:
        if _resolver is None:
            _resolver = concurrent.futures.ThreadPoolExecutor(
                RESOLVER_THREADS, thread_name_prefix="webhook-resolver"
            )
        future = _resolver.submit(resolve_host, host, port)
    try:
        return future.result(timeout=deadline.left(TimeoutError))
    except concurrent.futures.TimeoutError:
        future.cancel()  # still queued: never runs; running: abandoned
        raise TimeoutError(f"resolving {host} took longer than the attempt's deadline") from None


def _forget_resolver() -> None:
    """A forked child has none of its parent's threads: it starts a resolver of its own."""
    global _resolver
    _resolver = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_resolver)


# --- Signing ----------------------------------------------------------------------------------


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Automation-Signature value: "sha256=" + hex HMAC-SHA256 of "<timestamp>.<body>"."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def encode_body(body) -> bytes:
    """The exact bytes sent (and signed): compact UTF-8 JSON, nothing when there is no body."""
    if body is None:
        return b""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


# --- Sending ----------------------------------------------------------------------------------


def backoff_delay(attempt: int) -> float:
    """Seconds to wait after failed attempt `attempt` (1-based): exponential, full jitter."""
    ceiling = min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


def send(request: WebhookRequest, on_attempt: Callable[[int], None] | None = None) -> dict:
    """Send with retries. The result on success; WebhookError (with the result) on failure."""
    result = {
        "url": request.url,
        "status_code": None,
        "body": "",
        "attempts": 0,
        # The run's log shows what the receiver deduplicated on.
        "idempotency_key": request.idempotency_key,
    }
    for attempt in range(1, request.max_attempts + 1):
        if on_attempt is not None:
            on_attempt(attempt)
        result.update(attempts=attempt, status_code=None, body="")  # this attempt's outcome only
        started = time.monotonic()
        try:
            response_status, body_text = _attempt(request)
        except WebhookRefused as exc:
            metrics.webhook_attempt(metrics.WEBHOOK_REFUSED, None)
            raise WebhookError(redact(str(exc), request), result) from None
        except (TimeoutError, httpcore.TimeoutException):
            error = f"timed out after {request.timeout:g} s"
            retryable, outcome = True, metrics.WEBHOOK_TIMEOUT
        except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
            error = redact(f"network error: {exc or type(exc).__name__}", request)
            retryable, outcome = True, metrics.WEBHOOK_NETWORK_ERROR
        else:
            result.update(status_code=response_status, body=_kept(redact(body_text, request)))
            if 200 <= response_status < 300:
                metrics.webhook_attempt(metrics.WEBHOOK_SUCCESS, time.monotonic() - started)
                result.pop("error", None)
                return result
            error = f"HTTP {response_status}"
            retryable = response_status >= 500 or response_status in RETRYABLE_STATUS
            outcome = metrics.WEBHOOK_RETRIED_STATUS if retryable else metrics.WEBHOOK_FAILED_STATUS
        metrics.webhook_attempt(outcome, time.monotonic() - started)
        result["error"] = error
        logger.info("webhook %s attempt %s failed: %s", request.url, attempt, error)
        if not retryable:
            break
        if attempt < request.max_attempts:
            time.sleep(backoff_delay(attempt))
    attempts = result["attempts"]
    raise WebhookError(
        f"Webhook {request.method} {request.url} failed: {result['error']} "
        f"(attempt {attempts} of {request.max_attempts}).",
        result,
    )


def redact(text: str, request: WebhookRequest) -> str:
    """`text` with the request's secret and header values masked, should a server echo them.

    Shorter values are left alone: they would mask ordinary words of the answer.
    """
    for secret in sorted(_secrets(request), key=len, reverse=True):
        if len(secret) >= REDACT_MIN_LENGTH:
            text = text.replace(secret, REDACTED)
    return text


def _secrets(request: WebhookRequest) -> list[str]:
    return [request.secret or "", *request.headers.values()]


def _read_limit(request: WebhookRequest) -> int:
    """Bytes of an answer to read: the kept length, and enough beyond it that a secret the cut
    falls inside is read whole, so redact() can mask it before _kept() cuts."""
    return RESPONSE_BODY_LIMIT + max(len(secret.encode()) for secret in _secrets(request))


def _kept(text: str) -> str:
    """The first RESPONSE_BODY_LIMIT bytes of `text` (a character the cut splits is dropped),
    without U+0000, which PostgreSQL cannot store (it failed the whole run)."""
    text = text.replace("\x00", "")
    return text.encode()[:RESPONSE_BODY_LIMIT].decode("utf-8", errors="ignore")


def _attempt(request: WebhookRequest) -> tuple[int, str]:
    """One attempt, bounded as a whole by `request.timeout`: (status, body up to _read_limit).

    Socket timeouts bound each operation alone, so a server that trickles its status line,
    headers or body a byte at a time never trips them (one kept a worker for minutes). The
    attempt has one deadline instead: the resolver is waited for until it, and every socket
    operation gets the time left (actions/webhook_transport.py), whatever it waits for (connect,
    TLS, sending, headers, body); past it: TimeoutError or httpcore.TimeoutException.

    Redirects are followed by hand, checking every hop.
    """
    deadline = transport.Deadline(request.timeout)
    url = check_url_syntax(request.url)
    method, body = request.method, request.body
    extra_headers, secret = dict(request.headers), request.secret
    read_limit = _read_limit(request)
    with transport.within(deadline):
        for _hop in range(MAX_REDIRECTS + 1):
            ip = pinned_address(url, deadline)
            timestamp = str(int(time.time()))
            headers = {
                **extra_headers,
                "Content-Type": "application/json",
                "X-Automation-Timestamp": timestamp,
                "Idempotency-Key": request.idempotency_key,
            }
            if secret:
                headers["X-Automation-Signature"] = sign(secret, timestamp, body)
            status, location, text = _send_to(url, ip, method, headers, body, read_limit)
            if status not in _REDIRECT_STATUS or not location:
                return status, text
            next_url = check_url_syntax(urljoin(str(url), location))
            if (next_url.scheme, next_url.host, next_url.port) != (url.scheme, url.host, url.port):
                # The headers' values and the signature are meant for the configured host only:
                # a signature would let another host pass a request off as ours.
                extra_headers, secret = {}, None
            if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
                method, body = "GET", b""  # as browsers and httpx do
            url = next_url
    raise WebhookRefused(f"Too many redirects (more than {MAX_REDIRECTS}) from {request.url}.")


def _send_to(url: httpx.URL, ip, method, headers, body, read_limit) -> tuple[int, str | None, str]:
    """Send to the checked `ip`, with the URL's own host in Host and in TLS (server name and
    certificate): (status, Location, body's first `read_limit` bytes as text).

    No proxy from the environment: a proxy would connect to an address this guard never saw.
    """
    host_name = url.raw_host.decode("ascii")
    port = url.port or (443 if url.scheme == "https" else 80)
    context = transport.ssl_context(TLS_VERIFY) if url.scheme == "https" else None
    given = {name.lower() for name in headers}
    defaults = {name: value for name, value in DEFAULT_HEADERS.items() if name.lower() not in given}
    fields = {**defaults, **headers, "Host": url.netloc.decode("ascii")}
    if body or method in ("POST", "PUT", "PATCH"):
        fields["Content-Length"] = str(len(body))
    status, answer_headers, answer = transport.exchange(
        (url.scheme, str(ip), port, host_name),
        context,
        method,
        url.raw_path,
        [(name.encode("ascii"), value.encode()) for name, value in fields.items()],
        body,
        read_limit,
    )
    location = next(
        (value.decode("latin-1") for name, value in answer_headers if name.lower() == b"location"),
        None,
    )
    return status, location, answer.decode("utf-8", errors="replace")


def _netloc(ip, port) -> str:
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
