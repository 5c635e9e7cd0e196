"""The outbox: a model event becomes PENDING runs, written in the caller's transaction.

`emit_event` is the one entry point for model events (the signal receivers call it; code that
writes with QuerySet.update / bulk_create calls it directly): the rules watching the event, the
cause chain (depth, root, the rule that must not re-trigger itself) and the chain depth limit.
Each run is born in `automation.runs.create.create_run`, queued once the transaction commits.
"""

import logging

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import transaction

from accounts.current import get_current_user
from automation.core.choices import RunStatus, TriggerEvent, TriggerType
from automation.core.models import AutomationLog, AutomationRule
from automation.core.registry import automatable_for
from automation.core.snapshots import snapshot
from automation.fanout.chain import current_chain
from automation.index.watching import rules_watching, watched_anywhere
from automation.runs.create import create_run, depth_limit_error
from observability import metrics

logger = logging.getLogger("automation.triggers.outbox")


def _fires_on(rule: AutomationRule, event: str, changes: dict | None) -> bool:
    """UPDATED rules with watched fields fire only when one of them really changed."""
    if event == TriggerEvent.UPDATED and rule.watched_fields:
        return any(name in (changes or {}) for name in rule.watched_fields)
    return True


def emit_event(instance, event: str, changes: dict | None = None) -> list[AutomationLog]:
    """Create a PENDING run for every active rule watching `event` on this record.

    `changes` is {"field": {"old": .., "new": ..}}; on CREATED it defaults to every set field
    changed from null. Returns the logs written (runs cut by the chain depth or a fan-out budget
    included).
    """
    entry = automatable_for(type(instance))
    if entry is None:
        return []
    if not entry.owns_organization and not watched_anywhere(entry.label, event):
        return []  # before reading the related row the organization is found through
    organization_id = entry.organization_id_of(instance)
    rules = rules_watching(entry.label, event, organization_id)
    if not rules:
        return []
    object_snapshot = snapshot(instance)
    if changes is None and event == TriggerEvent.CREATED:
        changes = {
            name: {"old": None, "new": value}
            for name, value in object_snapshot.items()
            if value is not None
        }
    rules = [rule for rule in rules if _fires_on(rule, event, changes)]
    if not rules:
        return []

    chain = current_chain()
    depth = chain.depth + 1 if chain else 0
    content_type = ContentType.objects.get_for_model(type(instance))
    logs = []
    # Inside the caller's transaction when there is one. No savepoint (two round trips per
    # write): a failure here fails the caller's write anyway, and a run's database actions
    # have savepoints of their own.
    with transaction.atomic(savepoint=False):
        for rule in rules:
            if chain and chain.rule_id == rule.pk and not rule.allow_self_trigger:
                logger.debug("rule %s not re-triggered by its own run %s", rule.pk, chain.log_id)
                continue
            common = {
                "trigger": TriggerType.EVENT,
                "event": event,
                "content_type": content_type,
                "object_id": instance.pk,
                "object_snapshot": object_snapshot,
                "changes": changes,
                "user_id": _acting_user_id(chain),
                "parent_log_id": chain.log_id if chain else None,
                "root_log_id": chain.root_log_id if chain else None,
                "depth": depth,
                "extra_context": {"chain": list(chain.rule_names)} if chain else None,
                "budget_root": chain.root_log_id if chain else None,
            }
            if depth > settings.AUTOMATION_MAX_CHAIN_DEPTH:
                error = depth_limit_error((*chain.rule_names, rule.name))
                metrics.refused("AUTOMATION_MAX_CHAIN_DEPTH")
                # Its WARNING line (runs/outcomes.py) tells the chain.
                logs.append(create_run(rule, **common, status=RunStatus.FAILED, error=error))
                continue
            logs.append(create_run(rule, **common))
    return logs


def _acting_user_id(chain) -> int | None:
    """Runs caused by a run act for that run's user; others for whoever is acting now."""
    if chain is not None:
        return chain.user_id
    user = get_current_user()
    return user.pk if user is not None else None
