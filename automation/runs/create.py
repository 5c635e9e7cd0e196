"""Where every run is born: `create_run` writes its log (events, schedules, manual runs and
retries alike) and so counts it against the fan-out budgets (automation/fanout/budget.py); a
PENDING run is queued on its organization's queue only after the transaction commits
(runs/worker.py), so a rolled-back write leaves no log and runs nothing. If the enqueue itself is
lost (broker down, process killed), the sweeper finds the PENDING log later.
"""

import logging

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.utils import timezone

from automation.core.choices import RunStatus
from automation.core.models import AutomationLog, AutomationRule
from automation.core.snapshots import without_nul
from automation.fanout import budget
from automation.live.events import publish_log
from automation.runs import outcomes
from automation.runs.inserts import insert_log

logger = logging.getLogger("automation.runs.create")


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
    context = without_nul({"object": object_snapshot, **(extra_context or {})})
    changes = without_nul(changes)
    if status == RunStatus.PENDING and not dry_run:
        # The run and the bytes its log keeps, counted in one round trip.
        refusal, bytes_refusal = budget.admit_run_with_bytes(
            rule.organization_id, budget_root, budget.stored_size(context, changes)
        )
        if refusal:  # the run's WARNING line says it (runs/outcomes.py)
            status, error = RunStatus.FAILED, refusal
        status, error, context, changes = _settle_bytes(
            rule, bytes_refusal, status, error, context, changes
        )
    elif not dry_run:
        status, error, context, changes = _spend_bytes(
            rule, budget_root, status, error, context, changes
        )
    finished = status != RunStatus.PENDING
    now = timezone.now()
    log = insert_log(  # compiled once per process (runs/inserts.py)
        AutomationLog(
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
    )
    publish_log(log)
    if finished:
        outcomes.finished(log, queued=False)
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
    return _settle_bytes(rule, refusal, status, error, context, changes)


def _settle_bytes(rule, refusal: str, status, error, context, changes) -> tuple:
    """The run as written after the byte budgets' answer `refusal` (see _spend_bytes)."""
    if not refusal:
        return status, error, context, changes
    logger.info("rule %s: %s", rule.pk, refusal)  # a run it fails logs a WARNING line
    context = {**context, "object": None, OMITTED_KEY: True}
    if status == RunStatus.PENDING:
        status, error = RunStatus.FAILED, refusal
    return status, error or refusal, context, None


# In a run log's context: its snapshot and changes were not stored (over a byte budget).
OMITTED_KEY = "snapshot_omitted"


def enqueue_runs(organization_id: int, log_ids: list[int]) -> None:
    """Hand PENDING runs of one organization to its queue. A failure here loses nothing: the
    sweeper queues them again."""
    from automation.runs.worker import enqueue

    try:
        enqueue(organization_id, log_ids)
    except Exception:
        logger.exception("could not enqueue runs %s; the sweeper will pick them up", log_ids)


def depth_limit_error(rule_names) -> str:
    """The error of a run cut by the chain depth limit; `rule_names`: its chain, root first."""
    return (
        f"Chain depth limit ({settings.AUTOMATION_MAX_CHAIN_DEPTH}) reached; not run. "
        f"The chain: {' -> '.join(rule_names)}."
    )
