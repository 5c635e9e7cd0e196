"""Waking waiting runs when they are due: WAITING -> PENDING once, then their organization's queue.

The database says what is due (`status = WAITING and resume_at <= now`, a partial index), and
`wake_due_runs` is the only way out of WAITING: a conditional UPDATE per run that only one waker
can win, so however many wakers race (two ticks, a hint and a tick, two processes) a run is
woken and queued once. It goes to its organization's queue like any new run (fair_queue.py):
wake-ups take their turn with everyone else's runs.

Who calls it:
- **a hint**: when a run starts waiting, a Huey task is scheduled for its due time (Huey's
  scheduler looks every second), so a 2-second WAIT resumes about 2 seconds later. Only a hint:
  it may be lost with the queue (Redis restarted empty) or come twice, and neither matters;
- **the tick**: the sweeper (every minute, sweeper.py) wakes whatever is due, so a lost hint
  costs at most a minute, and runs due while every process was down wake at the first tick.

Hints are kept few: one per due second per process (a bulk write that holds 1,000 runs
schedules one), and a hint that finds more due runs than one batch calls itself again.
"""

import collections
import datetime
import logging
import math
import threading

from django.db import transaction
from django.db.models import F
from django.utils import timezone
from huey.contrib.djhuey import db_task

from automation.core.choices import RunStatus
from automation.core.models import AutomationLog
from automation.live.events import publish_log
from automation.runs.create import enqueue_runs

logger = logging.getLogger("automation.runs.wakeups")

# Most runs one call wakes (one transaction); more due ones wait for the next call.
WAKE_BATCH_SIZE = 500
# Hints this process remembers having scheduled, by due second (pruned as they pass).
_MAX_REMEMBERED_HINTS = 10_000
_hinted: set[int] = set()
_hinted_lock = threading.Lock()


def wake_due_runs(now: datetime.datetime | None = None, limit: int = WAKE_BATCH_SIZE) -> int:
    """Put the runs due by `now` (default: now) back to PENDING and queue them; how many.

    Each run is woken by a conditional UPDATE (still WAITING) that bumps its seq, so a run is
    woken once whoever else tries; its heartbeat is set, so the sweeper does not queue it again
    while it waits its turn in a long queue (only if it is still PENDING a while later)."""
    now = now or timezone.now()
    due = list(
        AutomationLog.objects.filter(status=RunStatus.WAITING, resume_at__lte=now)
        .order_by("resume_at")
        .values_list("pk", flat=True)[:limit]
    )
    if not due:
        return 0
    woken = []
    with transaction.atomic():
        for log_id in due:
            if AutomationLog.objects.filter(pk=log_id, status=RunStatus.WAITING).update(
                status=RunStatus.PENDING, seq=F("seq") + 1, heartbeat_at=timezone.now()
            ):
                woken.append(log_id)
        by_organization = collections.defaultdict(list)
        for log in AutomationLog.objects.select_related("rule").filter(pk__in=woken):
            publish_log(log)
            by_organization[log.organization_id].append(log.pk)
        for organization_id, log_ids in by_organization.items():
            transaction.on_commit(
                lambda organization_id=organization_id, log_ids=log_ids: enqueue_runs(
                    organization_id, sorted(log_ids)
                )
            )
    if woken:
        logger.info("woke %s waiting runs", len(woken))
    return len(woken)


def schedule_wakeup(due: datetime.datetime) -> None:
    """Ask the queue to wake the runs due at `due` (a hint, see the module): a Huey task at the
    next whole second, unless this process asked for that second already."""
    second = math.ceil(due.timestamp())
    with _hinted_lock:
        if second in _hinted:
            return
        past = math.floor(timezone.now().timestamp())
        _hinted.difference_update([s for s in _hinted if s < past])
        if len(_hinted) >= _MAX_REMEMBERED_HINTS:
            _hinted.clear()
        _hinted.add(second)
    eta = datetime.datetime.fromtimestamp(second, datetime.UTC)
    try:
        wake_due_runs_task.schedule(args=(eta.isoformat(),), eta=eta)
    except Exception:
        with _hinted_lock:
            _hinted.discard(second)
        logger.warning("could not schedule the wake-up at %s; the sweeper's tick will", eta)


@db_task()
def wake_due_runs_task(due: str) -> None:
    """A hint's task: wake the runs due by `due`, by the scheduler's clock if this one is late
    (runs a little ahead of this process's clock are not left for the tick)."""
    moment = max(timezone.now(), datetime.datetime.fromisoformat(due))
    if wake_due_runs(moment) >= WAKE_BATCH_SIZE:
        wake_due_runs_task(due)  # more were due: another batch, as a task of its own


def forget_hints() -> None:
    """Forget the hints this process scheduled (tests: behave like a process that just started)."""
    with _hinted_lock:
        _hinted.clear()
