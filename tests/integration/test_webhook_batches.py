"""Runs that reach outside executed in batches (runs/outside_batch.py): one transaction claims a
batch with each run's webhook RUNNING, the calls go out, one transaction records their
outcomes; each run still ends as alone.

Real runs (execute_runs, as a worker executes the batch it popped) calling a real loopback
server. The test's transaction nests each transaction of the engine as a savepoint, so the
SAVEPOINT statements count the engine's transactions.
"""

import datetime
import logging

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from automation.actions import webhooks
from automation.core.choices import ActionStatus, RunStatus, TriggerEvent
from automation.core.models import AutomationLog
from automation.fanout import budget
from automation.runs import outside_batch, sweeper, writer
from automation.runs.execute import execute_run, execute_runs
from automation.triggers.outbox import emit_event
from catalog.models import Category
from tests.factories import AutomationRuleFactory, ProductFactory
from tests.integration import test_budget, test_runs
from tests.integration import test_webhook_runs as single

pytestmark = pytest.mark.django_db

make_server, server, allow_only, fast_retries = (
    single.make_server,
    single.server,
    single.allow_only,
    single.fast_retries,
)
webhook, create_category = single.webhook, single.create_category
Listener, in_memory_layer = test_runs.Listener, test_runs.in_memory_layer

RUNS = 4


def pending_runs(organization, *actions, count=RUNS, event=TriggerEvent.UPDATED) -> list:
    """`count` PENDING runs of one new rule on `event` of a product (a product each). No other
    rule of the test watches the same event: each event makes one run."""
    rule = AutomationRuleFactory(organization=organization, trigger_event=event, actions=actions)
    runs = []
    for _ in range(count):
        product = ProductFactory(organization=organization)
        changes = {"stock": {"old": 1, "new": 2}} if event == TriggerEvent.UPDATED else None
        (log,) = emit_event(product, event, changes)
        assert log.rule_id == rule.pk
        runs.append(log)
    return runs


def transactions(captured) -> int:
    """The engine's transactions (savepoints in the test's transaction)."""
    return sum(1 for query in captured.captured_queries if query["sql"].startswith("SAVEPOINT"))


def keys(server) -> list[str]:
    return [request["headers"]["idempotency-key"] for request in server.requests]


def stored(logs) -> list[AutomationLog]:
    return list(AutomationLog.objects.filter(pk__in=[log.pk for log in logs]).order_by("pk"))


def watch_sends(monkeypatch, then=None) -> list:
    """At each call: the statuses of every run of the test as stored. `then(number)`, if
    given, runs after the number-th call (from 1)."""
    seen = []
    real_send = webhooks.send

    def send(request, on_attempt=None):
        seen.append(dict(AutomationLog.objects.values_list("pk", "status")))
        result = real_send(request, on_attempt=on_attempt)
        if then is not None:
            then(len(seen))
        return result

    monkeypatch.setattr(webhooks, "send", send)
    return seen


def test_a_batch_of_webhook_runs_is_claimed_and_recorded_in_two_transactions(
    organization, server, allow_only, monkeypatch
):
    allow_only(server)
    logs = pending_runs(organization, webhook(server.url()))
    seen = watch_sends(monkeypatch)
    with CaptureQueriesContext(connection) as captured:
        execute_runs([log.pk for log in logs])
    assert transactions(captured) == 2, "the claim of all four, then all their results"
    assert all(set(statuses.values()) == {RunStatus.RUNNING} for statuses in seen), (
        "every run was claimed, its webhook RUNNING, before the first call went out"
    )
    for log in stored(logs):
        assert log.status == RunStatus.SUCCEEDED
        (entry,) = log.action_logs
        assert entry["status"] == ActionStatus.SUCCEEDED and entry["attempt"] == 1
        assert entry["duration_ms"] is not None and entry["finished_at"] is not None
    assert sorted(keys(server)) == sorted(f"{log.run_uuid}-0" for log in logs), "each once"


def test_live_events_of_a_batched_run_are_those_of_a_run_alone(
    organization, server, allow_only, django_capture_on_commit_callbacks, in_memory_layer
):
    allow_only(server)
    listener = Listener(organization.pk)
    with django_capture_on_commit_callbacks(execute=True):
        alone, *logs = pending_runs(organization, webhook(server.url()), count=RUNS + 1)
    with django_capture_on_commit_callbacks(execute=True):
        execute_run(alone.pk)
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        CaptureQueriesContext(connection) as captured,
    ):
        execute_runs([log.pk for log in logs])
    assert transactions(captured) == 2
    messages = listener.messages()

    def events(log_id) -> list[tuple]:
        return [
            ("log", m["log"]["status"])
            if m["type"] == "automation.log"
            else ("action", m["action"]["order"], m["action"]["status"])
            for m in messages
            if (m["log"]["id"] if m["type"] == "automation.log" else m["log_id"]) == log_id
        ]

    expected = [
        ("log", RunStatus.PENDING),
        ("log", RunStatus.RUNNING),
        ("action", 0, ActionStatus.RUNNING),
        ("action", 0, ActionStatus.SUCCEEDED),
        ("log", RunStatus.SUCCEEDED),
    ]
    assert events(alone.pk) == expected
    for log in logs:
        assert events(log.pk) == expected
        seqs = [
            m["log"]["seq"] if m["type"] == "automation.log" else m["seq"]
            for m in messages
            if (m["log"]["id"] if m["type"] == "automation.log" else m["log_id"]) == log.pk
        ]
        assert seqs == sorted(set(seqs))
    assert len(callbacks) >= 2


def test_a_failed_webhook_in_a_batch_fails_only_its_run(
    organization, make_server, allow_only, fast_retries
):
    good, bad = make_server(), make_server()
    bad.respond({"status": 400, "body": b"no"})
    allow_only(good, bad)
    logs = pending_runs(organization, webhook(good.url()))
    (failing,) = pending_runs(organization, webhook(bad.url()), count=1, event="CREATED")
    with CaptureQueriesContext(connection) as captured:
        execute_runs([log.pk for log in (*logs, failing)])
    assert transactions(captured) == 2, "recorded with the others: no batch redone alone"
    statuses = {log.pk: log.status for log in stored((*logs, failing))}
    assert statuses == {**{log.pk: RunStatus.SUCCEEDED for log in logs}, failing.pk: "FAILED"}
    failed = AutomationLog.objects.get(pk=failing.pk)
    assert failed.action_logs[0]["status"] == ActionStatus.FAILED
    assert "HTTP 400" in failed.action_logs[0]["error"] and failed.action_logs[0]["attempt"] == 1
    assert len(good.requests) == RUNS and len(bad.requests) == 1


def test_a_run_taken_over_during_the_calls_is_left_to_its_new_owner(
    organization, server, allow_only, monkeypatch, caplog
):
    """The sweeper revives a run of the batch while the first call goes out (its worker
    looked dead): the batch records the others and writes nothing for that one, whose new owner
    sends its webhook again with the same key (at least once)."""
    allow_only(server)
    logs = pending_runs(organization, webhook(server.url()))
    taken = logs[2]

    def revive(number):
        if number == 1:
            long_ago = timezone.now() - datetime.timedelta(minutes=10)
            AutomationLog.objects.filter(pk=taken.pk).update(heartbeat_at=long_ago)
            assert sweeper.sweep()["revived"] == 1

    watch_sends(monkeypatch, then=revive)
    with caplog.at_level(logging.WARNING, logger="automation.runs.outside_batch"):
        execute_runs([log.pk for log in logs])
    assert f"run {taken.pk} was taken over" in caplog.text
    statuses = {log.pk: log.status for log in stored(logs)}
    assert statuses == {
        **{log.pk: RunStatus.SUCCEEDED for log in logs},
        taken.pk: RunStatus.PENDING,
    }
    left = AutomationLog.objects.get(pk=taken.pk)
    assert left.action_logs[0]["status"] == ActionStatus.RUNNING, "nothing written for it"

    execute_run(taken.pk)  # its new owner
    left.refresh_from_db()
    assert left.status == RunStatus.SUCCEEDED
    assert keys(server).count(f"{left.run_uuid}-0") == 2
    assert len(server.requests) == RUNS + 1


def test_a_failure_recording_the_batch_still_records_every_outcome_once(
    organization, server, allow_only, monkeypatch, django_capture_on_commit_callbacks
):
    """The results' transaction fails (after each run's outcome was applied in memory): each
    run is put back as it was and records its outcome alone, the call not made again."""
    allow_only(server)
    logs = pending_runs(organization, webhook(server.url()))
    real_flush_many = writer.RunWriter.flush_many
    flushes = []

    def flush_many(writers):
        flushes.append(len(writers))
        if len(flushes) == 2:  # the claim's went through: the results' fails
            raise RuntimeError("the database went away")
        real_flush_many(writers)

    monkeypatch.setattr(writer.RunWriter, "flush_many", staticmethod(flush_many))
    finished = []

    def ended(log, queued):  # counts a run's end once its transaction commits
        return lambda: finished.append(log.pk)

    monkeypatch.setattr(writer.outcomes, "_Ended", ended)
    with (
        django_capture_on_commit_callbacks(execute=True),
        CaptureQueriesContext(connection) as captured,
    ):
        execute_runs([log.pk for log in logs])
    assert flushes == [RUNS, RUNS]
    assert transactions(captured) == 2 + RUNS, "the claim, the failed record, each run alone"
    for log in stored(logs):
        assert log.status == RunStatus.SUCCEEDED
        (entry,) = log.action_logs
        assert entry["status"] == ActionStatus.SUCCEEDED and entry["attempt"] == 1
        assert entry["result"]["status_code"] == 200
    assert len(server.requests) == RUNS
    assert sorted(finished) == sorted(log.pk for log in logs), "each run's end counted once"


def test_database_actions_before_and_after_the_webhook_and_a_second_webhook(
    organization, server, allow_only
):
    """The claim carries the database actions before the webhook; what follows its result (a
    database action, a second webhook) continues alone once the results committed."""
    allow_only(server)
    logs = pending_runs(
        organization,
        create_category(),
        webhook(server.url()),
        create_category(),
        webhook(server.url("/second")),
    )
    with CaptureQueriesContext(connection) as captured:
        execute_runs([log.pk for log in logs])
    # The batch's 2, then each run alone: the category after the webhook (in its savepoint)
    # with the second's RUNNING entry, then the second's result.
    assert transactions(captured) == 2 + 3 * RUNS
    for log in stored(logs):
        assert log.status == RunStatus.SUCCEEDED
        assert [entry["status"] for entry in log.action_logs] == [ActionStatus.SUCCEEDED] * 4
    assert Category.objects.filter(name__startswith="Made by").count() == 2 * RUNS
    paths = [request["path"] for request in server.requests]
    assert paths.count("/hook") == RUNS and paths.count("/second") == RUNS


def test_a_long_batch_keeps_its_runs_heartbeats(
    organization, server, allow_only, monkeypatch, settings
):
    """Calls that last longer than the staleness limit in all: the batch writes its runs'
    heartbeats again as they go, so the sweeper, running between the calls, revives none of
    the runs still waiting for theirs."""
    allow_only(server)
    settings.AUTOMATION_HEARTBEAT_STALE_SECONDS = 100
    logs = pending_runs(organization, webhook(server.url()))
    clock = [0.0]

    class Clock:
        @staticmethod
        def monotonic():
            return clock[0]

    monkeypatch.setattr(outside_batch, "time", Clock)
    revived = []
    with time_machine.travel(timezone.now(), tick=False) as traveller:

        def a_call_of_40_seconds(number):
            clock[0] += 40
            traveller.shift(40)
            revived.append(sweeper.sweep()["revived"])

        seen = watch_sends(monkeypatch, then=a_call_of_40_seconds)
        execute_runs([log.pk for log in logs])
    assert revived == [0] * RUNS, "160 s of calls, a limit of 100 s: no run revived"
    assert set(seen[0].values()) == {RunStatus.RUNNING}, "all claimed before the first call"
    assert {log.status for log in stored(logs)} == {RunStatus.SUCCEEDED}
    assert len(server.requests) == RUNS


def test_the_answers_of_a_batchs_calls_are_counted_in_one_call_to_the_counters(
    organization, server, allow_only, monkeypatch
):
    """Each answer's bytes count against the byte budgets as alone (never refused: the call
    was made), all of the batch's with one call to the counters' store (one round trip to
    Redis) after the last call, not one a call."""
    allow_only(server)
    logs = pending_runs(organization, webhook(server.url()))
    calls = test_budget.store_calls(monkeypatch)
    execute_runs([log.pk for log in logs])
    (name, (counted,)) = calls[0]
    assert [name for name, _ in calls] == ["add_amounts"]
    results = [log.action_logs[0]["result"] for log in stored(logs)]
    assert [amount for _counters, amount, _quota in counted] == [
        budget.stored_size(result) for result in results
    ]
    roots = [[key for key, _ttl in counters][-1] for counters, _amount, _quota in counted]
    assert roots == [f"automation:budget:root:{log.pk}:bytes" for log in logs]
