"""What operators see of runs in this process: the metrics counted, the WARNING line of a failed
run, /metrics (who may read it, the gauges read from the database) and /healthz's verdict.

Counters are process-wide (prometheus-client's registry), so each test reads them before and
after and compares the difference. A real server and worker are scraped in tests/e2e/test_operations.py.
"""

import datetime
import logging

import pytest
import time_machine
from django.utils import timezone
from prometheus_client import REGISTRY

from automation.core import heartbeats
from automation.core.choices import ActionType, RunStatus, TriggerType
from automation.core.models import AutomationLog, AutomationRule
from automation.core.system_models import Heartbeat
from automation.runs.execute import execute_run, execute_runs
from automation.triggers.outbox import emit_event
from tests.factories import AutomationRuleFactory, ProductFactory

pytestmark = pytest.mark.django_db

LOOPBACK = {"REMOTE_ADDR": "127.0.0.1"}


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Counts:
    """Samples read now, and their growth since (`grown`)."""

    def __init__(self, *keys):
        self.keys = keys
        self.before = {key: sample(key[0], **dict(key[1:])) for key in keys}

    def grown(self) -> dict:
        return {key: sample(key[0], **dict(key[1:])) - self.before[key] for key in self.keys}


def runs(status, trigger="EVENT"):
    return ("automation_runs_total", ("status", status), ("trigger", trigger))


def actions(action_type, status):
    return ("automation_actions_total", ("action_type", action_type), ("status", status))


def refusals(limit):
    return ("automation_limit_refusals_total", ("limit", limit))


WAITS = ("automation_run_queue_wait_seconds_count",)
DURATIONS = ("automation_run_duration_seconds_count",)


def update(fields, **extra):
    return {"action_type": ActionType.UPDATE_RECORD, "parameters": {"fields": fields}, **extra}


GOOD = update({"description": "Seen {{ object.name }}"})
# Renders the product's name into an integer field: the action fails when it runs.
BAD = update({"stock": "{{ object.name }}"})


@pytest.fixture
def product(organization):
    return ProductFactory(organization=organization, status="ACTIVE", name="Lamp")


def run_once(rule, product, capture):
    """A real run of `rule` for an update of `product`, executed with its on-commit work."""
    with capture(execute=True):
        (log,) = [
            log
            for log in emit_event(product, "UPDATED", {"stock": {"old": 1, "new": 2}})
            if log.rule_id == rule.pk
        ]
    with capture(execute=True):
        execute_run(log.pk)
    log.refresh_from_db()
    return log


def test_every_final_status_is_counted_with_its_actions_and_failures_are_logged(
    organization, product, django_capture_on_commit_callbacks, caplog
):
    rules = {
        RunStatus.SUCCEEDED: AutomationRuleFactory(organization=organization, actions=[GOOD]),
        RunStatus.SKIPPED: AutomationRuleFactory(
            organization=organization,
            conditions=[{"field_name": "status", "operator": "EQUALS", "value": "DRAFT"}],
            actions=[GOOD],
        ),
        RunStatus.FAILED: AutomationRuleFactory(organization=organization, actions=[BAD, GOOD]),
        RunStatus.PARTIAL: AutomationRuleFactory(
            organization=organization, actions=[{**BAD, "continue_on_failure": True}, GOOD]
        ),
    }
    keys = [runs(status) for status in rules] + [
        actions("UPDATE_RECORD", "SUCCEEDED"),
        actions("UPDATE_RECORD", "FAILED"),
        actions("UPDATE_RECORD", "SKIPPED"),
        WAITS,
        DURATIONS,
    ]
    counts = Counts(*keys)
    caplog.set_level(logging.WARNING, logger="automation.runs")

    logs = {
        status: run_once(rule, product, django_capture_on_commit_callbacks)
        for status, rule in rules.items()
    }

    assert {status: log.status for status, log in logs.items()} == {s: s for s in rules}
    assert counts.grown() == {
        runs(RunStatus.SUCCEEDED): 1,
        runs(RunStatus.SKIPPED): 1,
        runs(RunStatus.FAILED): 1,
        runs(RunStatus.PARTIAL): 1,
        # SUCCEEDED 1, PARTIAL 1; the FAILED run's second action SKIPPED
        actions("UPDATE_RECORD", "SUCCEEDED"): 2,
        actions("UPDATE_RECORD", "FAILED"): 2,
        actions("UPDATE_RECORD", "SKIPPED"): 1,
        WAITS: 4,
        DURATIONS: 4,
    }
    warnings = [record for record in caplog.records if record.name == "automation.runs"]
    assert [(record.levelname, record.run_id) for record in warnings] == [
        ("WARNING", logs[RunStatus.FAILED].pk),
        ("WARNING", logs[RunStatus.PARTIAL].pk),
    ]
    failed = warnings[0]
    assert failed.rule_id == rules[RunStatus.FAILED].pk
    assert failed.organization_id == organization.pk
    assert failed.failed_actions == ["actions.0 UPDATE_RECORD"]
    assert failed.correlation_id == logs[RunStatus.FAILED].run_key()
    message = failed.getMessage()
    assert f"run {logs[RunStatus.FAILED].pk} of rule {rules[RunStatus.FAILED].pk}" in message
    assert "FAILED: Action 1 of 2 (actions.0, UPDATE_RECORD) failed:" in message


def test_a_batch_redone_run_by_run_counts_each_run_once(
    organization, django_capture_on_commit_callbacks
):
    """A batch whose action fails rolls back and is executed again run by run: the first pass's
    ends never commit, so they are not counted."""
    AutomationRuleFactory(organization=organization, actions=[BAD])
    products = [ProductFactory(organization=organization, name=f"P{n}") for n in range(3)]
    with django_capture_on_commit_callbacks(execute=True):
        log_ids = [
            log.pk
            for product in products
            for log in emit_event(product, "UPDATED", {"stock": {"old": 1, "new": 2}})
        ]
    counts = Counts(runs(RunStatus.FAILED), actions("UPDATE_RECORD", "FAILED"))

    with django_capture_on_commit_callbacks(execute=True):
        execute_runs(log_ids)

    assert set(AutomationLog.objects.filter(pk__in=log_ids).values_list("status", flat=True)) == {
        RunStatus.FAILED
    }
    assert counts.grown() == {runs(RunStatus.FAILED): 3, actions("UPDATE_RECORD", "FAILED"): 3}


def test_a_run_refused_by_a_budget_counts_as_failed_and_names_the_limit(
    organization, product, settings, django_capture_on_commit_callbacks
):
    settings.AUTOMATION_MAX_RUNS_PER_MINUTE = 1
    AutomationRuleFactory(organization=organization, actions=[GOOD])
    counts = Counts(runs(RunStatus.FAILED), refusals("AUTOMATION_MAX_RUNS_PER_MINUTE"), WAITS)

    with django_capture_on_commit_callbacks(execute=True):
        emit_event(product, "UPDATED", {"stock": {"old": 1, "new": 2}})
        (refused,) = emit_event(product, "UPDATED", {"stock": {"old": 2, "new": 3}})

    assert refused.status == RunStatus.FAILED
    # never queued, so no queue wait
    assert counts.grown() == {
        runs(RunStatus.FAILED): 1,
        refusals("AUTOMATION_MAX_RUNS_PER_MINUTE"): 1,
        WAITS: 0,
    }


def test_dry_runs_are_not_counted(organization, product, django_capture_on_commit_callbacks):
    from automation.runs.manual import run_rule

    rule = AutomationRuleFactory(manual_rule=True, organization=organization, actions=[GOOD])
    counts = Counts(runs(RunStatus.SUCCEEDED, TriggerType.MANUAL))
    with django_capture_on_commit_callbacks(execute=True):
        log = run_rule(rule, object_id=product.pk, dry_run=True, user=None)
    assert log.status == RunStatus.SUCCEEDED
    assert counts.grown() == {runs(RunStatus.SUCCEEDED, TriggerType.MANUAL): 0}


# --- /metrics ----------------------------------------------------------------------------------


def test_metrics_are_served_to_loopback_and_refused_to_other_addresses(client):
    answer = client.get("/metrics", **LOOPBACK)
    assert answer.status_code == 200
    assert answer["Content-Type"].startswith("text/plain; version=0.0.4")
    text = answer.content.decode()
    assert "automation_runs_pending " in text
    assert 'automation_build_info{version="' in text

    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200


def test_metrics_networks_and_token_admit_other_clients(client, settings):
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", **LOOPBACK).status_code == 403  # the list replaces loopback

    settings.METRICS_ALLOWED_NETWORKS = []
    settings.METRICS_TOKEN = "s3cret-metrics-token"
    bearer = {"HTTP_AUTHORIZATION": "Bearer s3cret-metrics-token"}
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9", **bearer).status_code == 200
    wrong = {"HTTP_AUTHORIZATION": "Bearer nope"}
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9", **wrong).status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 403


def gauges(client) -> dict[str, float]:
    text = client.get("/metrics", **LOOPBACK).content.decode()
    found = {}
    for line in text.splitlines():
        if line.startswith(
            (
                "automation_runs_",
                "automation_oldest",
                "automation_schedule",
                "automation_worker",
                "automation_scheduler",
            )
        ):
            name, _, value = line.rpartition(" ")
            if "{" not in name:
                found[name] = float(value)
    return found


def test_gauges_read_the_database_at_scrape_time(client, organization, product):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        rule = AutomationRuleFactory(organization=organization, actions=[GOOD])
        emit_event(product, "UPDATED", {"stock": {"old": 1, "new": 2}})
        emit_event(product, "UPDATED", {"stock": {"old": 2, "new": 3}})
        first = AutomationLog.objects.filter(rule=rule).order_by("pk").first()
        AutomationLog.objects.filter(pk=first.pk).update(status=RunStatus.RUNNING)
        for late in (datetime.timedelta(minutes=5), datetime.timedelta(seconds=10)):
            scheduled = AutomationRuleFactory(schedule_rule=True, organization=organization)
            # (saving computes next_run_at from the schedule: set it after)
            AutomationRule.objects.filter(pk=scheduled.pk).update(next_run_at=start - late)
    with time_machine.travel(start + datetime.timedelta(seconds=42), tick=False):
        found = gauges(client)

    assert found["automation_runs_pending"] == 1
    assert found["automation_runs_running"] == 1
    assert found["automation_oldest_pending_run_age_seconds"] == pytest.approx(42, abs=0.01)
    assert found["automation_schedule_slots_late"] == 1  # 5 minutes late; 52 s is on time
    assert found["automation_workers_seen"] == 0
    assert "automation_worker_last_seen_seconds" not in found  # never seen: no sample


# --- /healthz and heartbeats ---------------------------------------------------------------------


@pytest.fixture
def fresh_heartbeats():
    heartbeats.forget_local()
    yield
    heartbeats.forget_local()


def test_a_worker_writes_its_heartbeat_once_per_interval(settings, fresh_heartbeats):
    settings.AUTOMATION_WORKER_HEARTBEAT_SECONDS = 10
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        heartbeats.beat(heartbeats.WORKER)
        heartbeats.beat(heartbeats.WORKER)
    (row,) = Heartbeat.objects.filter(kind=heartbeats.WORKER)
    assert row.process == heartbeats.process_name()
    assert row.seen_at == start

    with time_machine.travel(start + datetime.timedelta(seconds=5), tick=False):
        heartbeats.beat(heartbeats.WORKER)  # within the interval: not written
    row.refresh_from_db()
    assert row.seen_at == start

    with time_machine.travel(start + datetime.timedelta(seconds=11), tick=False):
        heartbeats.beat(heartbeats.WORKER)
    row.refresh_from_db()
    assert row.seen_at == start + datetime.timedelta(seconds=11)
    assert row.started_at == start


def health(client):
    answer = client.get("/healthz")
    return answer.status_code, answer.json()


def test_healthz_is_degraded_when_runs_wait_and_no_worker_is_seen(
    client, organization, product, settings, fresh_heartbeats
):
    settings.AUTOMATION_HEALTH_WORKER_STALE_SECONDS = 60
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        AutomationRuleFactory(organization=organization, actions=[GOOD])
        heartbeats.beat(heartbeats.WORKER)
        emit_event(product, "UPDATED", {"stock": {"old": 1, "new": 2}})

    with time_machine.travel(start + datetime.timedelta(seconds=59), tick=False):
        status, report = health(client)
    assert status == 200 and report["status"] == "ok"
    assert report["workers"]["seen"] == 1

    with time_machine.travel(start + datetime.timedelta(seconds=61), tick=False):
        status, report = health(client)
    assert status == 503 and report["status"] == "degraded"
    assert report["workers"]["seen"] == 0
    assert report["workers"]["last_seen_seconds_ago"] == pytest.approx(61)
    assert report["problems"] == [
        "runs have waited 61 s and no worker was seen for 60 s "
        "(AUTOMATION_HEALTH_WORKER_STALE_SECONDS)"
    ]

    with time_machine.travel(start + datetime.timedelta(seconds=62), tick=False):
        heartbeats.beat(heartbeats.WORKER)  # a worker is back
        status, report = health(client)
    assert status == 200 and report["workers"]["seen"] == 1


def test_healthz_is_fine_without_workers_while_no_run_waits(client, settings, fresh_heartbeats):
    status, report = health(client)
    assert status == 200
    assert report["workers"] == {
        "seen": 0,
        "last_seen_at": None,
        "last_seen_seconds_ago": None,
        "stale_after_seconds": settings.AUTOMATION_HEALTH_WORKER_STALE_SECONDS,
    }
    assert report["scheduler"]["last_seen_at"] is None


def test_healthz_is_degraded_when_the_scheduler_missed_its_ticks(
    client, settings, fresh_heartbeats
):
    settings.AUTOMATION_HEALTH_SCHEDULER_STALE_SECONDS = 180
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        heartbeats.beat(heartbeats.SCHEDULER, now_required=True)
    with time_machine.travel(start + datetime.timedelta(seconds=179), tick=False):
        assert health(client)[0] == 200
    with time_machine.travel(start + datetime.timedelta(seconds=200), tick=False):
        status, report = health(client)
    assert status == 503
    assert report["problems"] == [
        "no scheduler tick for 200 s (AUTOMATION_HEALTH_SCHEDULER_STALE_SECONDS: 180)"
    ]


def test_the_tick_task_is_the_schedulers_heartbeat(settings, fresh_heartbeats):
    from automation.tasks import schedule_tick_task

    schedule_tick_task.call_local()
    (row,) = Heartbeat.objects.filter(kind=heartbeats.SCHEDULER)
    assert row.process == heartbeats.process_name()


def test_livez_says_only_that_the_process_answers(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        answer = client.get("/livez")
    assert answer.status_code == 200 and answer.json() == {"status": "ok"}


def test_an_internal_errors_reference_is_its_log_records_correlation_id(caplog):
    from automation.runs.writer import internal_error

    caplog.set_level(logging.ERROR, logger="automation.runs.writer")
    shown = internal_error("run 5 failed unexpectedly", ValueError("SQL text"))
    (record,) = caplog.records
    assert shown == f"Internal error (reference {record.correlation_id})."
