"""The sweeper: runs nobody is working on are revived or queued again."""

import collections
import datetime
import logging

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from automation.core.choices import RunStatus
from automation.core.models import AutomationLog
from automation.live.events import publish_log
from automation.runs.create import enqueue_runs

logger = logging.getLogger("automation.runs.sweeper")


def sweep(batch_size: int = 500) -> dict:
    """Recover runs nobody is working on.

    RUNNING logs whose heartbeat stopped (their worker died) go back to PENDING, to be resumed at
    their first unfinished action; PENDING logs no worker claimed in time are enqueued again (a
    duplicate delivery is harmless: the claim lets one through); WAITING logs that are due are
    woken (runs/wakeups.py: the tick behind the hints).
    """
    from automation.runs.wakeups import wake_due_runs

    woken = wake_due_runs()
    now = timezone.now()
    stale = now - datetime.timedelta(seconds=settings.AUTOMATION_HEARTBEAT_STALE_SECONDS)
    revived = 0
    stalled = AutomationLog.objects.filter(
        status=RunStatus.RUNNING, dry_run=False, heartbeat_at__lt=stale
    )
    for log_id in stalled.values_list("pk", flat=True)[:batch_size]:
        with transaction.atomic():
            if stalled.filter(pk=log_id).update(status=RunStatus.PENDING, seq=F("seq") + 1):
                revived += 1
                publish_log(AutomationLog.objects.select_related("rule").get(pk=log_id))
    waiting = now - datetime.timedelta(seconds=settings.AUTOMATION_SWEEP_PENDING_AFTER_SECONDS)
    # A run woken from a wait (or revived) has been PENDING since its heartbeat, not since it
    # was created: it is queued again only once it has waited that long since.
    pending = list(
        AutomationLog.objects.filter(
            Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=waiting),
            status=RunStatus.PENDING,
            dry_run=False,
            created_at__lt=waiting,
        )
        .order_by("created_at")
        .values_list("organization_id", "pk")[: _queue_room(batch_size)]
    )
    by_organization = collections.defaultdict(list)
    for organization_id, log_id in pending:
        by_organization[organization_id].append(log_id)
    for organization_id, log_ids in by_organization.items():
        enqueue_runs(organization_id, log_ids)
    if revived or pending:
        logger.info(
            "sweeper: %s stalled runs revived, %s pending runs re-enqueued", revived, len(pending)
        )
    return {"revived": revived, "requeued": len(pending), "woken": woken}


def _queue_room(limit: int) -> int:
    """How many PENDING runs the sweeper may enqueue now: `limit` minus the tasks still queued.

    An old PENDING log is either lost (broker restarted, worker killed) or still waiting behind a
    backlog; the two look the same from the database. Re-enqueueing the waiting ones too would add
    up to `limit` duplicates per sweep to a queue that is already behind (the reliability drill
    saw 7,500 enqueues for 600 runs). Bounding by the queue's depth keeps the duplicates to
    `limit`; the lost runs, oldest first, are enqueued once the backlog has drained below it.
    """
    from huey.contrib.djhuey import HUEY

    from automation.runs.queue import fair_queues

    try:
        queued = fair_queues(HUEY).size()
    except Exception:
        logger.warning("sweeper: the queue does not answer; nothing re-enqueued this time")
        return 0
    return max(limit - queued, 0)
