"""GET /healthz: is the deployment doing its work? GET /livez: does this process answer?

/healthz reports the database, the broker, the queue, the oldest PENDING run, how late the most
overdue WAITING run is (its wake-up hint lost and the sweeper's tick not running), the workers and
the scheduler (from their heartbeats, automation/core/heartbeats.py), and answers 503
"degraded" when any of these holds:
- the database or the broker does not answer;
- a run has waited longer than AUTOMATION_HEALTH_WORKER_STALE_SECONDS and no worker was seen for
  as long (every worker stopped, or stuck, while runs wait);
- the scheduler was seen once but not for AUTOMATION_HEALTH_SCHEDULER_STALE_SECONDS: it ticks
  every minute, so ticks were missed (schedules, the sweeper and retention are not running).
It reads the deployment, whichever server answers: for alerting and for a load balancer that
should stop sending work to a deployment that cannot do it, not for restarting this process.

/livez only says that the process answers (no database, no broker): what an orchestrator's
liveness probe should restart a process on.
"""

import logging

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.utils import timezone
from huey.contrib.djhuey import HUEY

from automation.core import heartbeats
from automation.core.choices import RunStatus
from automation.runs.queue import fair_queues

logger = logging.getLogger("automation.health")


def livez(request):
    return JsonResponse({"status": "ok"})


def healthz(request):
    report = {"status": "ok"}
    problems = []
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        report["database"] = {"ok": True, "vendor": connection.vendor}
    except Exception as exc:  # the point is to report it
        logger.warning("healthz: database check failed: %s", exc)
        report["database"] = {"ok": False, "error": str(exc)}
        problems.append("the database does not answer")
    try:
        report["broker"] = {
            "ok": True,
            "kind": type(HUEY).__name__,
            "queue_depth": HUEY.pending_count(),
            "runs_queued": fair_queues(HUEY).size(),
        }
    except Exception as exc:
        logger.warning("healthz: broker check failed: %s", exc)
        report["broker"] = {"ok": False, "error": str(exc)}
        problems.append("the broker does not answer")
    if report["database"]["ok"]:
        problems += _work(report, timezone.now())
    if problems:
        report["status"] = "degraded"
        report["problems"] = problems
    return JsonResponse(report, status=503 if problems else 200)


def _work(report: dict, now) -> list[str]:
    """Fill in the waiting runs, workers and scheduler; the problems they show."""
    from automation.core.models import AutomationLog

    oldest = (
        AutomationLog.objects.filter(status=RunStatus.PENDING)
        .order_by("created_at")
        .values_list("created_at", flat=True)
        .first()
    )
    waited = round((now - oldest).total_seconds(), 3) if oldest else None
    report["oldest_pending_run_age_seconds"] = waited
    overdue = (
        AutomationLog.objects.filter(status=RunStatus.WAITING, resume_at__lte=now)
        .order_by("resume_at")
        .values_list("resume_at", flat=True)
        .first()
    )
    report["most_overdue_waiting_run_seconds"] = (
        round((now - overdue).total_seconds(), 3) if overdue else None
    )
    problems = []

    worker_stale = settings.AUTOMATION_HEALTH_WORKER_STALE_SECONDS
    workers = heartbeats.seen(heartbeats.WORKER, worker_stale, now)
    report["workers"] = _seen(workers, now, worker_stale)
    if waited is not None and waited > worker_stale and workers.recent == 0:
        problems.append(
            f"runs have waited {waited:.0f} s and no worker was seen for {worker_stale:g} s "
            "(AUTOMATION_HEALTH_WORKER_STALE_SECONDS)"
        )

    scheduler_stale = settings.AUTOMATION_HEALTH_SCHEDULER_STALE_SECONDS
    scheduler = heartbeats.seen(heartbeats.SCHEDULER, scheduler_stale, now)
    report["scheduler"] = _seen(scheduler, now, scheduler_stale)
    if scheduler.last_seen_at is not None and scheduler.recent == 0:
        problems.append(
            f"no scheduler tick for {scheduler.seconds_ago(now):.0f} s "
            f"(AUTOMATION_HEALTH_SCHEDULER_STALE_SECONDS: {scheduler_stale:g})"
        )
    return problems


def _seen(seen: heartbeats.Seen, now, stale_after: float) -> dict:
    age = seen.seconds_ago(now)
    return {
        "seen": seen.recent,
        "last_seen_at": seen.last_seen_at.isoformat() if seen.last_seen_at else None,
        "last_seen_seconds_ago": None if age is None else round(age, 3),
        "stale_after_seconds": stale_after,
    }
