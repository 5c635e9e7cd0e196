"""CALL_WEBHOOK: an HTTP request to an outside address (actions/webhooks.py sends it)."""

import logging

from automation.actions import webhooks
from automation.actions.base import (
    MASK,
    ActionError,
    ActionHandler,
    add_message,
    count_bytes,
    join_path,
    parameters_schema_of,
    render_parameter,
    template_errors,
)
from automation.core.choices import ActionType
from observability import metrics

logger = logging.getLogger("automation.actions.call_webhook")


WEBHOOK_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]

MAX_TIMEOUT_SECONDS = 60

MAX_ATTEMPTS = 10


class CallWebhookHandler(ActionHandler):
    action_type = ActionType.CALL_WEBHOOK
    writes_database = False
    secret_paths = ("secret", "headers.*")
    secrets_bound_to = ("url", "method")
    parameters_schema = parameters_schema_of(
        {
            "url": {"type": "string", "minLength": 1, "maxLength": 2048},
            "method": {"enum": WEBHOOK_METHODS, "default": "POST"},
            "headers": {
                "description": "Extra headers; their values are write-only secrets.",
                "type": "object",
                "additionalProperties": {"type": "string", "maxLength": 4096},
            },
            "body": {"description": "Any JSON; sent as compact UTF-8 JSON and signed."},
            "secret": {
                "description": "HMAC-SHA256 key of X-Automation-Signature (write-only).",
                "type": ["string", "null"],
            },
            "timeoutSeconds": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": MAX_TIMEOUT_SECONDS,
                "default": 10,
            },
            "maxAttempts": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_ATTEMPTS,
                "default": 3,
            },
        },
        ["url"],
        "Call an http(s) URL with a JSON body, signed when a secret is set, retried on 5xx and "
        "network errors.",
    )

    def check(self, parameters, rule, errors, scope):
        url = parameters.get("url")
        template_errors(parameters.get("body"), "body", errors, scope)
        if url is not None:
            template_errors(url, "url", errors, scope)
        if url is not None and "url" not in errors and "{{" not in url:
            try:
                _check_static_url(url)
            except webhooks.WebhookRefused as exc:
                add_message(errors, "url", str(exc))
        for name, value in parameters.get("headers", {}).items():
            path = join_path("headers", name)
            if name.lower() in webhooks.RESERVED_HEADERS:
                add_message(errors, path, f'"{name}" is set by the engine.')
            elif not name or not all(33 <= ord(char) < 127 and char != ":" for char in name):
                add_message(errors, path, "Not a valid header name.")
            if any(char in value for char in "\r\n\0"):
                add_message(errors, path, "A header value cannot contain line breaks.")

    def _prepare(self, parameters, ctx) -> tuple[webhooks.WebhookRequest, object]:
        """The request to send, and the rendered body it encodes."""
        url = render_parameter(parameters["url"], ctx, "url")
        if not isinstance(url, str):
            raise ActionError(f"url: rendered to {url!r}, not a URL.")
        try:
            _check_static_url(url)
        except webhooks.WebhookRefused as exc:
            if ctx.run_key is not None and not ctx.dry_run:  # a real call, refused before it left
                metrics.webhook_attempt(metrics.WEBHOOK_REFUSED, None)
            raise ActionError(f"url: {exc}") from None
        body = render_parameter(parameters.get("body"), ctx, "body")
        try:
            raw_body = webhooks.encode_body(body)
        except (TypeError, ValueError) as exc:
            raise ActionError(f"body: cannot be sent as JSON: {exc}") from None
        request = webhooks.WebhookRequest(
            url=url,
            method=parameters.get("method", "POST"),
            headers=dict(parameters.get("headers", {})),
            body=raw_body,
            secret=parameters.get("secret") or None,
            idempotency_key=ctx.outside_key() if ctx.run_key is not None else "",
            timeout=float(parameters.get("timeoutSeconds", 10)),
            max_attempts=int(parameters.get("maxAttempts", 3)),
        )
        return request, body

    def execute(self, parameters, ctx, *, on_attempt=None):
        if ctx.run_key is None or ctx.action_order is None:
            raise ActionError("A webhook needs the run's key and action order.")
        request, _body = self._prepare(parameters, ctx)
        try:
            result = webhooks.send(request, on_attempt=on_attempt)
        except webhooks.WebhookError as exc:
            count_bytes(ctx, exc.result)
            raise ActionError(str(exc), result=exc.result) from None
        count_bytes(ctx, result)
        return result

    def dry_run(self, parameters, ctx):
        request, body = self._prepare(parameters, ctx)
        return {
            "would": "call",
            "method": request.method,
            "url": request.url,
            "headers": {name: MASK for name in request.headers},
            "body": body,
            "signed": bool(request.secret),
            "timeoutSeconds": request.timeout,
            "maxAttempts": request.max_attempts,
            # The host's DNS answer is checked when the request is sent, not in a dry run.
        }


def _check_static_url(url: str) -> None:
    """What can be checked without DNS: scheme, host, and an IP-literal host's address."""
    parsed = webhooks.check_url_syntax(url)
    ip = webhooks.literal_address(parsed.host)
    if ip is not None:
        webhooks.check_address(ip, parsed.port or (443 if parsed.scheme == "https" else 80))
