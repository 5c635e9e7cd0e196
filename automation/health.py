"""GET /healthz: database, broker, queue depth, the age of the oldest PENDING run and how late
the most overdue WAITING run is (its wake-up hint lost and the sweeper's tick not running)."""

import logging

from django.db import connection
from django.http import JsonResponse
from django.utils import timezone
from huey.contrib.djhuey import HUEY

from automation.core.choices import RunStatus
from automation.runs.queue import fair_queues

logger = logging.getLogger("automation.health")


def healthz(request):
    report = {"status": "ok"}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        report["database"] = {"ok": True, "vendor": connection.vendor}
    except Exception as exc:  # the point is to report it
        logger.warning("healthz: database check failed: %s", exc)
        report["database"] = {"ok": False, "error": str(exc)}
        report["status"] = "degraded"
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
        report["status"] = "degraded"
    if report["database"]["ok"]:
        from automation.core.models import AutomationLog

        oldest = (
            AutomationLog.objects.filter(status=RunStatus.PENDING)
            .order_by("created_at")
            .values_list("created_at", flat=True)
            .first()
        )
        now = timezone.now()
        report["oldest_pending_run_age_seconds"] = (
            round((now - oldest).total_seconds(), 3) if oldest else None
        )
        overdue = (
            AutomationLog.objects.filter(status=RunStatus.WAITING, resume_at__lte=now)
            .order_by("resume_at")
            .values_list("resume_at", flat=True)
            .first()
        )
        report["most_overdue_waiting_run_seconds"] = (
            round((now - overdue).total_seconds(), 3) if overdue else None
        )
    return JsonResponse(report, status=200 if report["status"] == "ok" else 503)
