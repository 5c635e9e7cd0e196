"""Signatures of webhook requests (automation/triggers/signatures.py), made as the senders make
them: GitHub's X-Hub-Signature-256, Stripe's Stripe-Signature, this engine's own headers."""

import hashlib
import hmac

import pytest
from django.http.request import HttpHeaders

from automation.triggers.signatures import SignatureRefused, verify

SECRET = "whsec-0123456789abcdef"
BODY = b'{"order": {"id": 7, "total": 120}}'
NOW = 1_800_000_000
TOLERANCE = 300


def hmac_hex(message: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def headers(**values) -> HttpHeaders:
    """Headers as Django's request.headers reads them (case-insensitive names)."""
    return HttpHeaders({"HTTP_" + name.upper(): value for name, value in values.items()})


def check(request_headers, body=BODY, now=NOW):
    return verify(SECRET, request_headers, body, now=now, tolerance=TOLERANCE)


def refusal(request_headers, body=BODY, now=NOW) -> SignatureRefused:
    with pytest.raises(SignatureRefused) as caught:
        check(request_headers, body, now)
    return caught.value


def github(body=BODY, secret=SECRET) -> HttpHeaders:
    return headers(X_Hub_Signature_256=f"sha256={hmac_hex(body, secret)}")


def ours(timestamp=NOW, body=BODY, secret=SECRET) -> HttpHeaders:
    signed = f"{timestamp}.".encode() + body
    return headers(
        X_Automation_Timestamp=str(timestamp),
        X_Automation_Signature=f"sha256={hmac_hex(signed, secret)}",
    )


def stripe(timestamp=NOW, body=BODY, secret=SECRET, extra="") -> HttpHeaders:
    signed = f"{timestamp}.".encode() + body
    return headers(Stripe_Signature=f"t={timestamp},{extra}v1={hmac_hex(signed, secret)}")


def test_each_scheme_signed_with_the_secret_is_accepted_and_named():
    assert check(github()) == "X-Hub-Signature-256"
    assert check(ours()) == "X-Automation-Signature"
    assert check(stripe()) == "Stripe-Signature"


def test_uppercase_hex_and_a_rolled_stripe_secret_are_accepted():
    upper = headers(X_Hub_Signature_256=f"sha256={hmac_hex(BODY).upper()}")
    assert check(upper) == "X-Hub-Signature-256"
    rolled = stripe(extra=f"v1={'0' * 64},v0={'1' * 64},")
    assert check(rolled) == "Stripe-Signature"


def test_no_signature_is_refused_saying_how_to_sign():
    refused = refusal(headers(Content_Type="application/json"))
    assert refused.code == "SIGNATURE_MISSING"
    assert "X-Hub-Signature-256" in refused.message
    assert "X-Automation-Timestamp" in refused.message


@pytest.mark.parametrize(
    "request_headers",
    [
        github(secret="another-secret-of-16"),
        github(body=b'{"order": {"id": 8}}'),
        headers(X_Hub_Signature_256=hmac_hex(BODY)),  # without "sha256="
        headers(X_Hub_Signature_256="sha256=zz"),
        ours(secret="another-secret-of-16"),
        ours(body=b"{}"),
        headers(X_Automation_Signature=f"sha256={hmac_hex(BODY)}"),  # no timestamp
        headers(X_Automation_Timestamp=str(NOW)),  # no signature
        headers(X_Automation_Timestamp="soon", X_Automation_Signature=f"sha256={'a' * 64}"),
        stripe(secret="another-secret-of-16"),
        headers(Stripe_Signature=f"v1={hmac_hex(BODY)}"),  # no t=
    ],
)
def test_a_wrong_or_malformed_signature_is_refused(request_headers):
    assert refusal(request_headers).code == "SIGNATURE_INVALID"


def test_a_signature_over_other_bytes_of_the_same_json_is_refused():
    # The raw bytes are signed: the same object spaced differently is another body.
    assert refusal(github(), body=b'{"order":{"id":7,"total":120}}').code == "SIGNATURE_INVALID"


@pytest.mark.parametrize("make", [ours, stripe])
def test_a_timestamped_signature_is_accepted_within_the_tolerance_either_way(make):
    assert check(make(timestamp=NOW - TOLERANCE))
    assert check(make(timestamp=NOW + TOLERANCE))


@pytest.mark.parametrize("make", [ours, stripe])
def test_a_replayed_timestamped_signature_is_refused_as_expired(make):
    stale = refusal(make(timestamp=NOW - TOLERANCE - 1))
    assert stale.code == "SIGNATURE_EXPIRED"
    assert "301 s old" in stale.message
    assert "AUTOMATION_WEBHOOK_TIMESTAMP_TOLERANCE_SECONDS" in stale.message
    ahead = refusal(make(timestamp=NOW + 3600))
    assert ahead.code == "SIGNATURE_EXPIRED"
    assert "ahead" in ahead.message


def test_a_stale_time_is_only_told_to_who_knows_the_secret():
    forged = ours(timestamp=NOW - 3600, secret="another-secret-of-16")
    assert refusal(forged).code == "SIGNATURE_INVALID"


def test_one_valid_scheme_among_several_is_enough():
    both = headers(
        X_Hub_Signature_256=f"sha256={'0' * 64}",
        X_Automation_Timestamp=str(NOW),
        X_Automation_Signature=f"sha256={hmac_hex(f'{NOW}.'.encode() + BODY)}",
    )
    assert check(both) == "X-Automation-Signature"


def test_a_non_ascii_header_is_refused_not_crashed_on():
    assert refusal(headers(X_Hub_Signature_256="sha256=é" * 3)).code == "SIGNATURE_INVALID"
