"""POST /hooks/<token>: any system runs a WEBHOOK rule by sending it a JSON object.

The token in the URL is the credential (the rule's `webhookUrl`; rotateRuleWebhook replaces it),
so this view is outside the API's authentication and CSRF-exempt. The request's body becomes the
run's `payload`. Every answer is JSON; refusals are `{"error": CODE, "message": ...}` and write
nothing. In the order they are checked:

| status | error | when |
| --- | --- | --- |
| 405 | METHOD_NOT_ALLOWED | not a POST (with `Allow: POST`) |
| 413 | PAYLOAD_TOO_LARGE | a body over AUTOMATION_WEBHOOK_MAX_BODY_BYTES: by its Content-Length before anything is read, else as it arrives |
| 404 | NOT_FOUND | no rule has this URL (never had, rotated away, or deleted) |
| 415 | UNSUPPORTED_MEDIA_TYPE | Content-Type is not application/json (a charset, if given, must be utf-8) |
| 401 | SIGNATURE_MISSING / SIGNATURE_INVALID / SIGNATURE_EXPIRED | the rule has a secret and the request is not signed with it (triggers/signatures.py) |
| 409 | RULE_PAUSED | the rule is paused; the sender may retry once it is active |
| 429 | RATE_LIMITED | over the rule's or the organization's requests per minute (with `Retry-After`) |
| 400 | INVALID_JSON / INVALID_PAYLOAD | not UTF-8 JSON (NaN and Infinity included), or not a payload (core/payloads.py) |
| 202 | | `{"runId": "<the run's log id, as the API gives it>", "status": "PENDING"}` |

A run refused by the fan-out or byte budgets is still accepted (202): it is written FAILED with
the reason, as any run over a budget is, and `status` says so.

Under ASGI (`serve`, uvicorn) Django reads a request's whole body before any view runs, so
`HookBodyLimit` wraps the ASGI application: it refuses a declared Content-Length over the cap
before reading a byte, and stops reading a body sent without one (chunked) once it passes the
cap. The view checks the same again for other servers (WSGI), reading at most the cap.
"""

import json
import logging
import math

from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from automation.core.payloads import payload_problem
from automation.triggers.inbound import Refused, accept, find_rule, receive

logger = logging.getLogger("automation.hooks")

PREFIX = "/hooks/"
PATH_PATTERN = r"^hooks/(?P<token>[^/]*)/?$"


@csrf_exempt
def receive_webhook(request, token: str):
    try:
        log = _receive(request, token)
    except Refused as refusal:
        response = refused(refusal.status, refusal.code, refusal.message)
        if refusal.retry_after is not None:
            response["Retry-After"] = str(refusal.retry_after)
        return response
    return JsonResponse({"runId": str(log.pk), "status": log.status}, status=202)


def _receive(request, token: str):
    if request.method != "POST":
        raise Refused(405, "METHOD_NOT_ALLOWED", "Send the JSON payload with POST.")
    limit = settings.AUTOMATION_WEBHOOK_MAX_BODY_BYTES
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if not declared.isdigit():
        raise Refused(400, "INVALID_REQUEST", "Content-Length is not a number.")
    if int(declared) > limit:
        raise Refused(413, "PAYLOAD_TOO_LARGE", too_large(limit))
    rule = find_rule(token)
    if rule is None:
        raise Refused(404, "NOT_FOUND", "No rule has this webhook URL.")
    _check_content_type(request)
    body = request.read(limit + 1)
    if len(body) > limit:
        raise Refused(413, "PAYLOAD_TOO_LARGE", too_large(limit))
    verified_by = accept(rule, request.headers, body)
    return receive(rule, parse_payload(body), verified_by=verified_by)


def _check_content_type(request) -> None:
    charset = (request.content_params or {}).get("charset")
    if request.content_type != "application/json" or (
        charset is not None and charset.lower() not in ("utf-8", "utf8")
    ):
        raise Refused(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            "Send the payload as Content-Type: application/json (UTF-8); got "
            f"{request.META.get('CONTENT_TYPE') or 'none'}.",
        )


def parse_payload(body: bytes) -> dict:
    """The body as a payload; Refused (400) when it is not UTF-8 JSON holding one."""
    try:
        value = json.loads(
            body.decode("utf-8"), parse_constant=_not_json, parse_float=_finite_number
        )
    except UnicodeDecodeError:
        raise Refused(400, "INVALID_JSON", "The body is not UTF-8 text.") from None
    except RecursionError:
        raise Refused(400, "INVALID_PAYLOAD", "The JSON nests too deeply.") from None
    except ValueError as exc:  # JSONDecodeError, NaN or Infinity, an integer too long
        raise Refused(400, "INVALID_JSON", f"The body is not JSON: {exc}.") from None
    problem = payload_problem(value)
    if problem:
        raise Refused(400, "INVALID_PAYLOAD", problem)
    return value


def _not_json(name: str):
    raise ValueError(f"{name} is not a JSON value")


def _finite_number(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is too large a number")
    return number


def too_large(limit: int) -> str:
    return f"The body is larger than {limit} bytes (AUTOMATION_WEBHOOK_MAX_BODY_BYTES)."


def refused(status: int, code: str, message: str) -> JsonResponse:
    response = JsonResponse({"error": code, "message": message}, status=status)
    if status == 405:
        response["Allow"] = "POST"
    return response


class HookBodyLimit:
    """ASGI middleware: a request to /hooks/ sends at most AUTOMATION_WEBHOOK_MAX_BODY_BYTES
    (see the module docstring). The body read is handed to the application as one message."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            return await self.app(scope, receive, send)
        limit = settings.AUTOMATION_WEBHOOK_MAX_BODY_BYTES
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            return await _send_too_large(send, limit)
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None  # the client left: nobody to answer
            body += message.get("body", b"")
            if len(body) > limit:
                return await _send_too_large(send, limit)
            more = message.get("more_body", False)
        delivered = False

        async def replay():
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        return await self.app(scope, replay, send)


async def _send_too_large(send, limit: int) -> None:
    content = json.dumps({"error": "PAYLOAD_TOO_LARGE", "message": too_large(limit)}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(content)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": content})
