"""Retention: delete run logs past their status's age, keeping every log a kept log points to.

Ages come from settings.AUTOMATION_LOG_RETENTION_DAYS ({"SKIPPED": 7, "SUCCEEDED": 30, ...}),
counted from the log's creation. Only finished statuses are ever purged: PENDING and RUNNING logs
are work in progress, whatever their age.

A log is kept while another log points to it (parent_log, root_log, retry_of), so a chain or a
retry never loses its origin. Deletion therefore goes in rounds, leaves first: an expired log that
nothing points to is deleted; once its referrers are gone, the log they pointed to becomes a leaf
and goes in a later round; one pointed to by a kept log is never a leaf. Each batch is its own
short transaction, so the table is never locked for long and the worker keeps writing meanwhile.

The run stream's journal goes first (automation/live/journal.py: events older than
AUTOMATION_STREAM_RETENTION_HOURS, oldest first), and a log is kept while the journal still has
an event of it, so an event a subscriber replays always finds its run.
"""

import datetime
import logging

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from automation.core.choices import FINISHED_RUN_STATUSES
from automation.core.models import AutomationLog, StreamEvent
from automation.fanout import budget
from automation.live import journal

logger = logging.getLogger("automation.runs.retention")

BATCH_SIZE = 500
REFERENCES = ("parent_log", "root_log", "retry_of")


def _expired(now) -> Q:
    """Logs past their status's retention age (finished statuses only)."""
    query = Q(pk__in=[])
    for status, days in settings.AUTOMATION_LOG_RETENTION_DAYS.items():
        if status not in FINISHED_RUN_STATUSES or days is None:
            continue
        query |= Q(status=status, created_at__lt=now - datetime.timedelta(days=days))
    return query


def _unreferenced():
    """No log points to this one (one Exists per reference, each served by its FK index), and
    the stream's journal has no event of it (its log_id index)."""
    referenced = Exists(StreamEvent.objects.filter(log_id=OuterRef("pk")))
    for name in REFERENCES:
        referenced |= Exists(AutomationLog.objects.filter(**{name: OuterRef("pk")}))
    return ~referenced


def purge(now=None, *, dry_run: bool = False, batch_size: int = BATCH_SIZE) -> tuple[dict, int]:
    """Purge the stream's journal, then the logs: ({status: logs}, stream events) deleted (or,
    with `dry_run`, that would be)."""
    now = now or timezone.now()
    events = journal.purge(now, dry_run=dry_run)
    return purge_logs(now, dry_run=dry_run, batch_size=batch_size, journal_purged=True), events


def purge_logs(
    now=None, *, dry_run: bool = False, batch_size: int = BATCH_SIZE, journal_purged=False
) -> dict:
    """Delete expired logs (the stream's journal first, unless `journal_purged`); returns
    {status: count} of the logs that were (or would be) deleted."""
    now = now or timezone.now()
    if not journal_purged:
        journal.purge(now, dry_run=dry_run)
    if dry_run:
        return _plan(now)
    deleted: dict[str, int] = {}
    expired = AutomationLog.objects.filter(_expired(now))
    while True:
        with transaction.atomic():
            batch = list(
                expired.filter(_unreferenced())
                .order_by("pk")
                .values_list("pk", "status")[:batch_size]
            )
            if not batch:
                break
            AutomationLog.objects.filter(pk__in=[pk for pk, _ in batch]).delete()
        for _, status in batch:
            deleted[status] = deleted.get(status, 0) + 1
    if deleted:
        logger.info("retention: deleted %s logs %s", sum(deleted.values()), deleted)
        budget.forget_stored()  # the storage quota's counters are measured again
    return deleted


def _plan(now) -> dict:
    """What purge_logs would delete, computed without deleting (for --dry-run)."""
    expired = {
        pk: (status, refs)
        for pk, status, *refs in AutomationLog.objects.filter(_expired(now)).values_list(
            "pk", "status", *(f"{name}_id" for name in REFERENCES)
        )
    }
    # Expired logs a kept (not expired) log points to, then whatever those point to, and so on.
    kept_roots = set()
    for name in REFERENCES:
        kept_roots.update(
            AutomationLog.objects.exclude(_expired(now))
            .filter(**{f"{name}__isnull": False})
            .values_list(f"{name}_id", flat=True)
        )
    kept = set()
    stack = [pk for pk in kept_roots if pk in expired]
    while stack:
        pk = stack.pop()
        if pk in kept:
            continue
        kept.add(pk)
        stack.extend(ref for ref in expired[pk][1] if ref in expired)
    plan: dict[str, int] = {}
    for pk, (status, _) in expired.items():
        if pk not in kept:
            plan[status] = plan.get(status, 0) + 1
    return plan
