"""A request from outside runs a WEBHOOK rule: the engine's side of POST /hooks/<token>
(automation/hooks.py owns the HTTP side: methods, sizes, content types, answers).

`accept` decides, in this order, and writes nothing until everything passed: the rule's
signature (when it has a secret: automation/triggers/signatures.py), whether it is active, and
the rate caps (per rule and per organization, counted in the cache like the sign-in and
invitation limits: accounts/ratelimit.py, shared by every server process through Redis in
distributed mode). Only requests that are signed correctly count against the caps, so someone
who learned the URL but not the secret cannot use up a rule's requests. Then the payload becomes
a run like any other (runs/create.py: the fan-out budgets, the byte budgets, the organization's
fair queue), committed before the caller is answered: an accepted request is never lost.
"""

import logging
import re
import time

from django.conf import settings
from django.db import transaction

from accounts.ratelimit import count
from automation.core.choices import TriggerType
from automation.core.models import AutomationLog, AutomationRule
from automation.runs.create import create_run
from automation.triggers import signatures
from observability import metrics

logger = logging.getLogger("automation.triggers.inbound")

# secrets.token_urlsafe's alphabet; anything else names no rule and costs no query.
TOKEN_FORM = re.compile(r"[A-Za-z0-9_-]{20,64}")
WINDOW_SECONDS = 60


class Refused(Exception):
    """The request is refused with HTTP `status`, error `code` and a message; nothing written."""

    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


def find_rule(token: str) -> AutomationRule | None:
    """The WEBHOOK rule whose URL holds `token`, unless it was deleted."""
    if not TOKEN_FORM.fullmatch(token):
        return None
    return (
        AutomationRule.objects.filter(
            webhook_token=token, trigger_type=TriggerType.WEBHOOK, deleted_at__isnull=True
        )
        .order_by()
        .first()
    )


def accept(rule: AutomationRule, headers, body: bytes) -> str | None:
    """Check a request to `rule` before its body is parsed: the header whose signature was
    verified (None when the rule has no secret), or Refused (401, 409, 429)."""
    verified_by = None
    if rule.webhook_secret:
        try:
            verified_by = signatures.verify(
                rule.webhook_secret,
                headers,
                body,
                now=time.time(),
                tolerance=settings.AUTOMATION_WEBHOOK_TIMESTAMP_TOLERANCE_SECONDS,
            )
        except signatures.SignatureRefused as exc:
            raise Refused(401, exc.code, exc.message) from None
    if not rule.is_active:
        raise Refused(
            409,
            "RULE_PAUSED",
            "This rule is paused (isActive false): nothing was run. Send the request again "
            "once it is active.",
        )
    _count(rule)
    return verified_by


def _count(rule: AutomationRule) -> None:
    for kind, scope, limit, setting, whose in (
        (
            "webhook:rule",
            rule.pk,
            settings.AUTOMATION_WEBHOOK_REQUESTS_PER_RULE_PER_MINUTE,
            "AUTOMATION_WEBHOOK_REQUESTS_PER_RULE_PER_MINUTE",
            "This rule",
        ),
        (
            "webhook:org",
            rule.organization_id,
            settings.AUTOMATION_WEBHOOK_REQUESTS_PER_ORGANIZATION_PER_MINUTE,
            "AUTOMATION_WEBHOOK_REQUESTS_PER_ORGANIZATION_PER_MINUTE",
            "This organization's rules",
        ),
    ):
        if limit <= 0:
            continue
        retry_after = count(kind, str(scope), limit, WINDOW_SECONDS)
        if retry_after is not None:
            metrics.refused(setting)
            raise Refused(
                429,
                "RATE_LIMITED",
                f"{whose} accepted {limit} requests in the last minute ({setting}); nothing "
                f"was run. Try again in {retry_after} s.",
                retry_after=retry_after,
            )


def receive(rule: AutomationRule, payload: dict, *, verified_by: str | None) -> AutomationLog:
    """The run of `rule` for an accepted request, committed (queued after the commit)."""
    with transaction.atomic():
        log = create_run(
            rule,
            trigger=TriggerType.WEBHOOK,
            extra_context={"payload": payload, "signature": verified_by},
        )
    logger.info("rule %s: webhook run %s (%s)", rule.pk, log.pk, log.status)
    return log
