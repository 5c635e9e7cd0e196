"""A WEBHOOK rule's URL: replacing its token (rotateRuleWebhook).

The token is made when the rule is first saved (AutomationRule.save). Replacing it is a change
of the rule like any other: its revision grows, and the old URL stops working with the commit,
since the endpoint reads the token from the database on every request (nothing caches it).
"""

import logging

from django.core.exceptions import ValidationError
from django.db import transaction

from accounts.current import acting_as, get_current_user
from automation.core.choices import TriggerType
from automation.core.models import AutomationRule, new_webhook_token

logger = logging.getLogger("automation.rules.webhooks")


def rotate_webhook(rule: AutomationRule, *, user=None) -> AutomationRule:
    """Give the WEBHOOK rule a new URL token; ValidationError at `id` for any other rule."""
    with acting_as(user if user is not None else get_current_user()), transaction.atomic():
        rule = AutomationRule.objects.select_for_update().get(pk=rule.pk, deleted_at__isnull=True)
        if rule.trigger_type != TriggerType.WEBHOOK:
            raise ValidationError(
                {
                    "id": [
                        f"Only WEBHOOK rules have a webhook URL; this is a {rule.trigger_type} rule."
                    ]
                }
            )
        rule.webhook_token = new_webhook_token()
        rule.revision += 1
        rule.save(update_fields=["webhook_token", "revision", "updated_at", "updated_by"])
        logger.info("rule %s: webhook URL replaced (revision %s)", rule.pk, rule.revision)
        return rule
