"""Who sent a webhook request: HMAC-SHA256 signatures made with a WEBHOOK rule's secret.

Three header schemes, so common senders work as they are:

- GitHub's: `X-Hub-Signature-256: sha256=<hex HMAC(secret, raw body)>`. It signs no time, so a
  recorded request can be sent again; prefer a timestamped scheme when the sender has one.
- Stripe's: `Stripe-Signature: t=<unix seconds>,v1=<hex HMAC(secret, "<t>.<raw body>")>` (several
  `v1` entries while Stripe rolls a secret: any one may match).
- This engine's own (what a CALL_WEBHOOK action sends, README "Receiving webhooks"):
  `X-Automation-Timestamp: <unix seconds>` and
  `X-Automation-Signature: sha256=<hex HMAC(secret, "<timestamp>.<raw body>")>`.

A timestamped signature is accepted only while its time is within
AUTOMATION_WEBHOOK_TIMESTAMP_TOLERANCE_SECONDS of the server's clock, either way: a recorded
request cannot be replayed later. The time is checked after the signature, so only a caller who
knows the secret learns that a time was refused. Signatures are compared in constant time
(`hmac.compare_digest`), over the raw bytes received, before anything parses them.
"""

import hashlib
import hmac
import re
from dataclasses import dataclass

GITHUB = "X-Hub-Signature-256"
STRIPE = "Stripe-Signature"
TIMESTAMP = "X-Automation-Timestamp"
SIGNATURE = "X-Automation-Signature"

_HEX_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")
_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")

HOW = (
    f"sign the raw body with the rule's secret: {GITHUB}: sha256=<hex HMAC-SHA256 of the body>, "
    f'or {TIMESTAMP}: <unix seconds> with {SIGNATURE}: sha256=<hex HMAC-SHA256 of "<timestamp>.'
    f'<body>">, or {STRIPE}: t=<unix seconds>,v1=<the same hex>'
)


@dataclass
class SignatureRefused(Exception):
    """The request is not signed with the rule's secret; `code` says how (the endpoint's 401)."""

    code: str  # SIGNATURE_MISSING, SIGNATURE_INVALID, SIGNATURE_EXPIRED
    message: str

    def __str__(self) -> str:
        return self.message


def verify(secret: str, headers, body: bytes, *, now: float, tolerance: int) -> str:
    """The header whose signature of `body` is valid; SignatureRefused when none is.

    `headers`: a mapping with case-insensitive names (Django's `request.headers`).
    """
    key = secret.encode()
    checks = []
    if GITHUB in headers:
        checks.append((GITHUB, _github(key, headers[GITHUB], body)))
    if STRIPE in headers:
        checks.append((STRIPE, _stripe(key, headers[STRIPE], body, now, tolerance)))
    if TIMESTAMP in headers or SIGNATURE in headers:
        checks.append((SIGNATURE, _ours(key, headers, body, now, tolerance)))
    if not checks:
        raise SignatureRefused("SIGNATURE_MISSING", f"This rule checks signatures: {HOW}.")
    for header, refusal in checks:
        if refusal is None:
            return header
    refusals = [refusal for _header, refusal in checks]
    # A stale but genuine signature says the most about what to fix.
    raise next((r for r in refusals if r.code == "SIGNATURE_EXPIRED"), refusals[0])


def sign(key: bytes, message: bytes) -> str:
    """Lowercase hex HMAC-SHA256 (what every scheme above carries)."""
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _matches(expected_hex: str, given_hex: str) -> bool:
    return hmac.compare_digest(expected_hex.encode(), given_hex.lower().encode())


def _github(key: bytes, value: str, body: bytes) -> SignatureRefused | None:
    found = _HEX_SIGNATURE.fullmatch(value.strip())
    if found is None or not _matches(sign(key, body), found.group(1)):
        return _invalid(f"{GITHUB} is not sha256=<hex HMAC-SHA256 of the body with the secret>.")
    return None


def _stripe(key: bytes, value: str, body: bytes, now: float, tolerance: int):
    items = [item.strip().partition("=") for item in value.split(",")]
    times = [v for k, _, v in items if k == "t"]
    signatures = [v for k, _, v in items if k == "v1" and re.fullmatch(r"[0-9a-fA-F]{64}", v)]
    if len(times) != 1 or not _UNIX_SECONDS.fullmatch(times[0]) or not signatures:
        return _invalid(f"{STRIPE} is not t=<unix seconds>,v1=<hex HMAC-SHA256>.")
    expected = sign(key, times[0].encode() + b"." + body)
    # Every entry is compared (no early exit), so the time taken does not say which matched.
    if not sum(_matches(expected, signature) for signature in signatures):
        return _invalid(f'{STRIPE} does not match: v1 is HMAC-SHA256 of "<t>.<body>".')
    return _stale(int(times[0]), now, tolerance)


def _ours(key: bytes, headers, body: bytes, now: float, tolerance: int):
    timestamp = headers.get(TIMESTAMP, "").strip()
    found = _HEX_SIGNATURE.fullmatch(headers.get(SIGNATURE, "").strip())
    if not _UNIX_SECONDS.fullmatch(timestamp) or found is None:
        return _invalid(
            f"Send {TIMESTAMP}: <unix seconds> and {SIGNATURE}: sha256=<hex HMAC-SHA256 of "
            '"<timestamp>.<body>">, both.'
        )
    if not _matches(sign(key, timestamp.encode() + b"." + body), found.group(1)):
        return _invalid(f'{SIGNATURE} does not match: it is HMAC-SHA256 of "<timestamp>.<body>".')
    return _stale(int(timestamp), now, tolerance)


def _stale(timestamp: int, now: float, tolerance: int) -> SignatureRefused | None:
    off = now - timestamp
    if abs(off) <= tolerance:
        return None
    when = f"{int(off)} s old" if off > 0 else f"{int(-off)} s ahead of the server's clock"
    return SignatureRefused(
        "SIGNATURE_EXPIRED",
        f"The signature's timestamp is {when}; at most {tolerance} s either way are accepted "
        "(AUTOMATION_WEBHOOK_TIMESTAMP_TOLERANCE_SECONDS). Sign the request when you send it.",
    )


def _invalid(message: str) -> SignatureRefused:
    return SignatureRefused("SIGNATURE_INVALID", message)
