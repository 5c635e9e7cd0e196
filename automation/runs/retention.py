"""Retention: delete run logs past their status's age, keeping every log a kept log points to.

Ages come from settings.AUTOMATION_LOG_RETENTION_DAYS ({"SKIPPED": 7, "SUCCEEDED": 30, ...}),
counted from the log's creation. Only finished statuses are ever purged: PENDING and RUNNING logs
are work in progress, whatever their age.

A log is kept while another log points to it (parent_log, root_log, retry_of), so a chain or a
retry never loses its origin, and while the run stream's journal has an event of it, so an event
a subscriber replays always finds its run. The journal goes first (automation/live/journal.py:
events older than AUTOMATION_STREAM_RETENTION_HOURS, oldest first).

The purge walks the expired logs once, newest first, in batches: one keyset read over the expiry
index per status, merged (automation/core/keyset.py), that starts where the last batch ended. A
log points only to older logs (its parent, root and retried run existed before it), so by the
time the walk reaches a log, every expired log that pointed to it has been looked at: deleted, or
kept and keeping it. Within a batch the same holds in rounds (a leaf, then what it pointed to).
The few logs a walk passes while something still points to them are looked at once more at the
end, in rounds, for the odd log older than what points to it. Each batch is its own short
transaction, so the table is never locked for long and the worker keeps writing meanwhile; its
cost does not depend on the table's size (the former purge restarted at the lowest id each
batch and walked past every row it had deleted or kept: 61 -> 967 ms a batch at a million logs).
"""

import datetime
import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from automation.core import keyset
from automation.core.choices import FINISHED_RUN_STATUSES
from automation.core.models import AutomationLog
from automation.core.system_models import StreamEvent
from automation.fanout import budget
from automation.live import journal

logger = logging.getLogger("automation.runs.retention")

BATCH_SIZE = 500
DRY_RUN_BATCH_SIZE = 2_000
REFERENCES = ("parent_log", "root_log", "retry_of")
# Logs the walk passed while others pointed to them, looked at again at its end; more wait for
# the next purge.
HELD_AT_MOST = 100_000


def _expired(now) -> list:
    """Logs past their status's retention age, one part per finished status (each a range of
    the expiry index)."""
    parts = []
    for status, days in settings.AUTOMATION_LOG_RETENTION_DAYS.items():
        if status not in FINISHED_RUN_STATUSES or days is None:
            continue
        cutoff = now - datetime.timedelta(days=days)
        parts.append(AutomationLog.objects.filter(status=status, created_at__lt=cutoff))
    return parts


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
    {status: count} of the logs that were (or, with `dry_run`, would be) deleted."""
    now = now or timezone.now()
    if not journal_purged:
        journal.purge(now, dry_run=dry_run)
    sweep = _Sweep(dry_run)
    if dry_run:  # nothing locked or deleted: fewer, larger batches
        batch_size = max(batch_size, DRY_RUN_BATCH_SIZE)
    parts, after = _expired(now), None
    while True:
        with transaction.atomic():
            _serial()
            batch = keyset.newest(parts, batch_size, after, fields=_CANDIDATE_FIELDS)
            if not batch:
                break
            after = (batch[-1].created_at, batch[-1].pk)
            sweep.take({row.pk: _candidate(row) for row in batch})
    held = sweep.held
    while held:
        sweep.held = {}
        progress = False
        pks = list(held)
        for start in range(0, len(pks), batch_size):
            with transaction.atomic():
                _serial()
                chunk = {pk: held[pk] for pk in pks[start : start + batch_size]}
                progress |= sweep.take(chunk) > 0
        held = sweep.held if progress else {}
    if sweep.deleted and not dry_run:
        logger.info("retention: deleted %s logs %s", sum(sweep.deleted.values()), sweep.deleted)
        budget.forget_stored()  # the storage quota's counters are measured again
    return sweep.deleted


def _serial() -> None:
    """No parallel workers for this transaction's statements: PostgreSQL planned the
    referrers' three small index lookups with two workers, whose start cost more than the
    lookups (20 of 25 ms a batch)."""
    connection = transaction.get_connection()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")


_CANDIDATE_FIELDS = ["status", *(f"{name}_id" for name in REFERENCES)]


def _candidate(row) -> tuple[str, bool]:
    """(status, whether it points to another log) of a log the walk read."""
    return row.status, any(getattr(row, f"{name}_id") is not None for name in REFERENCES)


class _Sweep:
    """Deletes (or, dry, pretends to) the candidates nothing keeps; counts them by status."""

    def __init__(self, dry_run: bool):
        self.dry_run = dry_run
        self.deleted: dict[str, int] = {}
        self.held: dict[int, tuple[str, bool]] = {}
        # A dry run deletes nothing, so the logs it would delete still point to older ones:
        # those that point anywhere are remembered as gone (a few in a hundred, chains and
        # retries).
        self.gone: set[int] = set()

    def take(self, candidates: dict[int, tuple[str, bool]]) -> int:
        """Delete the candidates ({id: (status, points to a log)}) that nothing kept points to,
        in rounds; remember (up to HELD_AT_MOST) the ones something still points to."""
        referrers = _referrers(candidates)
        journaled = {
            log_id
            for chunk in _chunks(list(candidates), 1)
            for log_id in StreamEvent.objects.filter(log_id__in=chunk).values_list(
                "log_id", flat=True
            )
        }
        deletable: set[int] = set()

        def free(pk) -> bool:
            return all(ref in deletable or ref in self.gone for ref in referrers.get(pk, ()))

        while True:
            found = [
                pk for pk in candidates if pk not in deletable and pk not in journaled and free(pk)
            ]
            if not found:
                break
            deletable.update(found)
        if deletable and not self.dry_run:
            AutomationLog.objects.filter(pk__in=list(deletable)).only("pk").delete()
        for pk in deletable:
            status, points = candidates[pk]
            self.deleted[status] = self.deleted.get(status, 0) + 1
            if self.dry_run and points:
                self.gone.add(pk)
        for pk in candidates.keys() - deletable - journaled:
            if len(self.held) < HELD_AT_MOST:
                self.held[pk] = candidates[pk]
        return len(deletable)


def _referrers(candidates) -> dict[int, set[int]]:
    """{candidate id: ids of the logs that point to it}: a statement per chunk of candidates,
    a range of each reference's index (an OR of the three made SQLite read the whole table)."""
    columns = ["pk", *(f"{name}_id" for name in REFERENCES)]
    found: dict[int, set[int]] = {}
    for chunk in _chunks(list(candidates), len(REFERENCES)):
        pointing = [
            AutomationLog.objects.filter(**{f"{name}_id__in": chunk})
            .order_by()
            .values_list(*columns)
            for name in REFERENCES
        ]
        for pk, *targets in pointing[0].union(*pointing[1:], all=True):
            for target in targets:
                if target in candidates and target != pk:
                    found.setdefault(target, set()).add(pk)
    return found


def _chunks(values: list, uses: int):
    """`values` in chunks that keep a statement using each `uses` times within the database's
    limit of parameters (999 for Django on SQLite)."""
    limit = transaction.get_connection().features.max_query_params
    size = max(limit // uses, 1) if limit else len(values) or 1
    for start in range(0, len(values), size):
        yield values[start : start + size]
