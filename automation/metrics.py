"""GET /metrics: this process's counters (observability/metrics.py) and gauges read from the
database at scrape time, in Prometheus' text format; 403 unless observability/access.py admits
the client.

The gauges are the deployment's state, the same whichever server answers: runs waiting and
running, the oldest waiting run's age, schedule slots left late, and what the heartbeats say.
Each is one bounded, indexed query: counts stop at GAUGE_COUNT_CAP (a count past it reads as the
cap), the oldest run is the first row of log_status_idx, late slots come from the scheduler's
partial index rule_due_schedule_idx, heartbeats from a table of a row per process.
"""

import datetime

from django.conf import settings
from django.http import HttpResponse, HttpResponseForbidden
from django.utils import timezone
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from automation.core import heartbeats
from automation.core.choices import RunStatus, TriggerType
from automation.core.models import AutomationLog, AutomationRule
from observability.access import allowed
from observability.exposition import FORBIDDEN

GAUGE_COUNT_CAP = 100_000
# A slot the tick (every minute) has not fired this long after its time is late.
SLOT_LATE_SECONDS = 90


def _capped_count(queryset) -> int:
    return queryset.order_by()[:GAUGE_COUNT_CAP].count()


class DatabaseGauges:
    """A prometheus-client collector reading the gauges when collected (each scrape)."""

    def collect(self):
        now = timezone.now()
        logs = AutomationLog.objects.all()
        yield _gauge(
            "automation_runs_pending",
            f"Runs waiting for a worker (PENDING; counted up to {GAUGE_COUNT_CAP}).",
            _capped_count(logs.filter(status=RunStatus.PENDING)),
        )
        yield _gauge(
            "automation_runs_running",
            f"Runs a worker is executing (RUNNING; counted up to {GAUGE_COUNT_CAP}).",
            _capped_count(logs.filter(status=RunStatus.RUNNING)),
        )
        oldest = (
            AutomationLog.objects.filter(status=RunStatus.PENDING)
            .order_by("created_at")
            .values_list("created_at", flat=True)
            .first()
        )
        yield _gauge(
            "automation_oldest_pending_run_age_seconds",
            "Age of the oldest run waiting for a worker (0 when none waits).",
            (now - oldest).total_seconds() if oldest else 0.0,
        )
        late = AutomationRule.objects.filter(
            trigger_type=TriggerType.SCHEDULE,
            is_active=True,
            deleted_at__isnull=True,
            next_run_at__lte=now - datetime.timedelta(seconds=SLOT_LATE_SECONDS),
        )
        yield _gauge(
            "automation_schedule_slots_late",
            f"Active SCHEDULE rules whose next slot is more than {SLOT_LATE_SECONDS} s overdue "
            "(the scheduler's tick did not fire it).",
            _capped_count(late),
        )
        yield from _heartbeat_gauges(now)


def _heartbeat_gauges(now):
    workers = heartbeats.seen(
        heartbeats.WORKER, settings.AUTOMATION_HEALTH_WORKER_STALE_SECONDS, now
    )
    yield _gauge(
        "automation_workers_seen",
        "Worker processes whose heartbeat is at most AUTOMATION_HEALTH_WORKER_STALE_SECONDS old.",
        workers.recent,
    )
    for kind, name, help_text in (
        (
            heartbeats.WORKER,
            "automation_worker_last_seen_seconds",
            "Age of the latest worker heartbeat.",
        ),
        (
            heartbeats.SCHEDULER,
            "automation_scheduler_last_tick_seconds",
            "Age of the latest scheduler tick (or scheduler start).",
        ),
    ):
        found = workers if kind == heartbeats.WORKER else heartbeats.seen(kind, 0, now)
        age = found.seconds_ago(now)
        if age is not None:  # never seen: no sample
            yield _gauge(name, help_text, age)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


_database_registry = CollectorRegistry(auto_describe=False)
_database_registry.register(DatabaseGauges())


def metrics_view(request):
    if not allowed(request.META.get("REMOTE_ADDR"), request.headers.get("Authorization")):
        return HttpResponseForbidden(FORBIDDEN, content_type="text/plain; charset=utf-8")
    body = generate_latest(REGISTRY) + generate_latest(_database_registry)
    return HttpResponse(body, content_type=CONTENT_TYPE_PLAIN_0_0_4)
