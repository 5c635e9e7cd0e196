"""The outbox: every run starts as a PENDING AutomationLog written in the caller's transaction.

`emit_event` is the one entry point for model events (the signal receivers call it; code that
writes with QuerySet.update / bulk_create calls it directly). `create_run` is the one place a run
log is born, for events, schedules, manual runs and retries alike, and so where every run is
counted against the fan-out budgets (automation/budget.py). The Huey task is enqueued only
after the transaction commits, so a rolled-back write leaves no log and runs nothing; if the
enqueue itself is lost (broker down, process killed), the sweeper finds the PENDING log later.
"""

import logging

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.utils import timezone

from accounts.current import get_current_user
from automation.core.choices import RunStatus, TriggerEvent, TriggerType
from automation.core.models import AutomationLog, AutomationRule
from automation.core.registry import automatable_for
from automation.core.snapshots import snapshot, without_nul
from automation.fanout import budget
from automation.fanout.chain import current_chain
from automation.index.watching import rules_watching
from automation.live.events import publish_log

logger = logging.getLogger("automation.triggers.outbox")


def create_run(
    rule: AutomationRule,
    *,
    trigger: str,
    event: str | None = None,
    content_type: ContentType | None = None,
    object_id=None,
    object_snapshot: dict | None = None,
    changes: dict | None = None,
    user_id: int | None = None,
    scheduled_for=None,
    parent_log_id: int | None = None,
    root_log_id: int | None = None,
    depth: int = 0,
    retry_of: AutomationLog | None = None,
    dry_run: bool = False,
    status: str = RunStatus.PENDING,
    error: str = "",
    extra_context: dict | None = None,
    budget_root: int | None = None,
) -> AutomationLog:
    """Write a run log; a PENDING one is enqueued after commit. Call inside a transaction.

    A run that would run is counted against the fan-out budgets (of its organization, and of
    the tree `budget_root` when a run causes it); over one, it is written FAILED with the reason.
    """
    if status == RunStatus.PENDING and not dry_run:
        refusal = budget.admit_run(rule.organization_id, budget_root)
        if refusal:
            logger.warning("rule %s: %s", rule.pk, refusal)
            status, error = RunStatus.FAILED, refusal
    context = without_nul({"object": object_snapshot, **(extra_context or {})})
    changes = without_nul(changes)
    if not dry_run:
        status, error, context, changes = _spend_bytes(
            rule, budget_root, status, error, context, changes
        )
    finished = status != RunStatus.PENDING
    now = timezone.now()
    log = AutomationLog.objects.create(
        organization_id=rule.organization_id,
        rule=rule,
        trigger=trigger,
        event=event,
        content_type=content_type,
        object_id=None if object_id is None else str(object_id),
        status=status,
        rule_revision=rule.revision,
        dry_run=dry_run,
        changes=changes,
        context=context,
        error=error,
        triggered_by_id=user_id,
        scheduled_for=scheduled_for,
        parent_log_id=parent_log_id,
        root_log_id=root_log_id,
        depth=depth,
        retry_of=retry_of,
        started_at=now if finished else None,
        finished_at=now if finished else None,
    )
    publish_log(log)
    if status == RunStatus.PENDING and not dry_run:
        log_id, organization_id = log.pk, log.organization_id
        transaction.on_commit(lambda: enqueue_runs(organization_id, [log_id]))
    return log


def _spend_bytes(rule, budget_root, status, error, context, changes) -> tuple:
    """Count the bytes the log will keep (its snapshot and changes) against the byte budgets
    and the storage quota (budget.admit_bytes); over one, the run is FAILED with the reason and
    keeps neither (the snapshot replaced by OMITTED_KEY). Returns (status, error, context,
    changes) to write."""
    refusal = budget.admit_bytes(
        rule.organization_id,
        budget_root,
        budget.stored_size(context, changes),
        kind=budget.RUN_BYTES,
    )
    if not refusal:
        return status, error, context, changes
    logger.warning("rule %s: %s", rule.pk, refusal)
    context = {**context, "object": None, OMITTED_KEY: True}
    if status == RunStatus.PENDING:
        status, error = RunStatus.FAILED, refusal
    return status, error or refusal, context, None


# In a run log's context: its snapshot and changes were not stored (over a byte budget).
OMITTED_KEY = "snapshot_omitted"


def enqueue_runs(organization_id: int, log_ids: list[int]) -> None:
    """Hand PENDING runs of one organization to its queue. A failure here loses nothing: the
    sweeper queues them again."""
    from automation.tasks import enqueue_runs as enqueue

    try:
        enqueue(organization_id, log_ids)
    except Exception:
        logger.exception("could not enqueue runs %s; the sweeper will pick them up", log_ids)


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
    organization_id = getattr(instance, "organization_id", None)
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
                logs.append(create_run(rule, **common, status=RunStatus.FAILED, error=error))
                logger.warning("chain depth limit reached: %s", error)
                continue
            logs.append(create_run(rule, **common))
    return logs


def depth_limit_error(rule_names) -> str:
    """The error of a run cut by the chain depth limit; `rule_names`: its chain, root first."""
    return (
        f"Chain depth limit ({settings.AUTOMATION_MAX_CHAIN_DEPTH}) reached; not run. "
        f"The chain: {' -> '.join(rule_names)}."
    )


def _acting_user_id(chain) -> int | None:
    """Runs caused by a run act for that run's user; others for whoever is acting now."""
    if chain is not None:
        return chain.user_id
    user = get_current_user()
    return user.pk if user is not None else None
