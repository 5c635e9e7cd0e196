"""A run calling webhooks writes its state no more often than the guarantees need: a webhook's
RUNNING entry is committed before its call goes out, with whatever precedes it (the claim, the
database actions before it, the previous webhook's result), not in a transaction of its own
ahead of the call (one commit each: most of a webhook's latency after the network's own).

Real runs (execute_run) calling a real loopback server; each transaction of a run writes its log
once (RunWriter's guarded UPDATE), so the UPDATEs of the log count the run's transactions.
"""

import datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from automation.actions import webhooks
from automation.core.choices import ActionStatus, ActionType, RunStatus
from automation.core.models import AutomationLog
from automation.runs import sweeper
from automation.runs.execute import execute_run
from automation.triggers.outbox import emit_event
from catalog.models import Category
from tests.factories import AutomationRuleFactory, ProductFactory
from tests.integration import test_webhooks as base

pytestmark = pytest.mark.django_db

make_server, server, allow_only, fast_retries = (
    base.make_server,
    base.server,
    base.allow_only,
    base.fast_retries,
)


def webhook(url, **extra):
    return {"action_type": ActionType.CALL_WEBHOOK, "parameters": {"url": url, **extra}}


def create_category():
    return {
        "action_type": ActionType.CREATE_RECORD,
        "parameters": {"model": "catalog.category", "fields": {"name": "Made by {{ rule.name }}"}},
    }


def pending_run(organization, *actions):
    rule = AutomationRuleFactory(organization=organization, actions=list(actions))
    product = ProductFactory(organization=organization)
    logs = emit_event(product, rule.trigger_event, {"stock": {"old": 1, "new": 2}})
    (log,) = [log for log in logs if log.rule_id == rule.pk]
    return log


def log_writes(captured) -> int:
    table = AutomationLog._meta.db_table
    return sum(
        1 for query in captured.captured_queries if query["sql"].startswith(f'UPDATE "{table}"')
    )


class Calls(list):
    log_id: int
    captured: CaptureQueriesContext


def test_a_webhook_goes_out_after_one_commit_the_claim_with_its_running_entry(
    organization, server, allow_only, monkeypatch
):
    allow_only(server)
    log = pending_run(organization, webhook(server.url()))
    seen = watch_calls(monkeypatch, log)
    with CaptureQueriesContext(connection) as captured:
        seen.captured = captured
        execute_run(log.pk)
    assert seen == [(1, [ActionStatus.RUNNING])], "the claim's one write carried RUNNING"
    assert log_writes(captured) == 2, "then its result, with the finish"
    log.refresh_from_db()
    assert log.status == RunStatus.SUCCEEDED and log.action_logs[0]["attempt"] == 1
    assert len(server.requests) == 1


def test_database_actions_then_two_webhooks_commit_each_start_with_what_precedes_it(
    organization, server, allow_only, monkeypatch
):
    allow_only(server)
    log = pending_run(
        organization, create_category(), webhook(server.url()), webhook(server.url("/second"))
    )
    seen = watch_calls(monkeypatch, log)
    with CaptureQueriesContext(connection) as captured:
        seen.captured = captured
        execute_run(log.pk)
    done, running, pending = ActionStatus.SUCCEEDED, ActionStatus.RUNNING, ActionStatus.PENDING
    assert seen == [
        (1, [done, running, pending]),  # the claim: the category, the first webhook's start
        (2, [done, done, running]),  # the first's result with the second's start
    ]
    assert log_writes(captured) == 3
    log.refresh_from_db()
    assert log.status == RunStatus.SUCCEEDED
    assert Category.objects.filter(name__startswith="Made by").count() == 1
    assert [request["path"] for request in server.requests] == ["/hook", "/second"]


def test_a_worker_killed_during_the_call_leaves_the_webhook_running_and_the_run_resumable(
    organization, server, allow_only, monkeypatch
):
    """The RUNNING entry is in the claim's commit: a worker dying in the call leaves a run the
    sweeper revives, whose webhook is called again (at least once), once more only."""
    allow_only(server)
    log = pending_run(organization, webhook(server.url()), create_category())
    real_send = webhooks.send

    class WorkerKilled(BaseException):
        pass

    def send_then_die(request, on_attempt=None):
        real_send(request, on_attempt=on_attempt)
        raise WorkerKilled

    monkeypatch.setattr(webhooks, "send", send_then_die)
    with pytest.raises(WorkerKilled):
        execute_run(log.pk)
    stored = AutomationLog.objects.get(pk=log.pk)
    assert stored.status == RunStatus.RUNNING
    assert [e["status"] for e in stored.action_logs] == [ActionStatus.RUNNING, "PENDING"]

    monkeypatch.setattr(webhooks, "send", real_send)
    long_ago = stored.created_at - datetime.timedelta(minutes=10)  # a dead worker's run
    AutomationLog.objects.filter(pk=log.pk).update(heartbeat_at=long_ago, created_at=long_ago)
    assert sweeper.sweep()["revived"] == 1
    execute_run(log.pk)
    stored.refresh_from_db()
    assert stored.status == RunStatus.SUCCEEDED
    assert len(server.requests) == 2
    assert Category.objects.filter(name__startswith="Made by").count() == 1


def watch_calls(monkeypatch, log) -> Calls:
    """At each webhook call: (log writes so far, the action entries' statuses as stored)."""
    seen = Calls()
    seen.log_id = log.pk
    real_send = webhooks.send

    def send(request, on_attempt=None):
        stored = AutomationLog.objects.get(pk=seen.log_id)
        seen.append((log_writes(seen.captured), [e["status"] for e in stored.action_logs]))
        return real_send(request, on_attempt=on_attempt)

    monkeypatch.setattr(webhooks, "send", send)
    return seen


# --- A lone run whose claim writes nothing but its log: claimed by its guarded write ------------


def count_locks(monkeypatch) -> list:
    """The runs' lock statements (SELECT ... FOR UPDATE SKIP LOCKED of their states) taken."""
    from automation.runs import reads

    taken = []
    real = reads.lock_states

    def lock_states(log_ids):
        taken.append(list(log_ids))
        return real(log_ids)

    monkeypatch.setattr(reads, "lock_states", lock_states)
    return taken


def test_a_run_whose_first_action_is_a_webhook_takes_no_lock_before_its_claim(
    organization, server, allow_only, monkeypatch
):
    """Its claim's transaction writes nothing but its log (RUNNING, the webhook's entry
    RUNNING): the guarded UPDATE, which matches only the seq that was read, is the claim."""
    allow_only(server)
    log = pending_run(organization, webhook(server.url()), create_category())
    locks = count_locks(monkeypatch)
    execute_run(log.pk)
    assert locks == []
    log.refresh_from_db()
    assert log.status == RunStatus.SUCCEEDED and len(server.requests) == 1
    assert Category.objects.filter(name__startswith="Made by").count() == 1


def test_a_run_with_a_database_action_first_is_still_locked_before_it(
    organization, server, allow_only, monkeypatch
):
    allow_only(server)
    log = pending_run(organization, create_category(), webhook(server.url()))
    locks = count_locks(monkeypatch)
    execute_run(log.pk)
    assert locks == [[log.pk]]
    log.refresh_from_db()
    assert log.status == RunStatus.SUCCEEDED and len(server.requests) == 1


@pytest.mark.parametrize("meanwhile", ["revived", "claimed"])
def test_a_run_changed_between_its_read_and_its_guarded_claim_is_read_again(
    organization, server, allow_only, monkeypatch, meanwhile
):
    """Revived by the sweeper meanwhile (seq moved, still PENDING): evaluated again and called
    once. Claimed by another worker meanwhile (RUNNING): nothing called by this one."""
    from django.db.models import F

    from automation.conditions import evaluate as conditions

    allow_only(server)
    log = pending_run(organization, webhook(server.url()))
    evaluations = []
    real = conditions.evaluate_conditions

    def evaluate(rule, ctx, tree=None, **options):
        evaluations.append(ctx.log_id)
        if len(evaluations) == 1:
            changed = {"seq": F("seq") + 2}
            if meanwhile == "claimed":
                changed["status"] = RunStatus.RUNNING
            AutomationLog.objects.filter(pk=log.pk).update(**changed)
        return real(rule, ctx, tree, **options)

    monkeypatch.setattr(conditions, "evaluate_conditions", evaluate)
    execute_run(log.pk)
    log.refresh_from_db()
    if meanwhile == "revived":
        assert evaluations == [log.pk, log.pk]
        assert log.status == RunStatus.SUCCEEDED and len(server.requests) == 1
    else:
        assert evaluations == [log.pk]
        assert log.status == RunStatus.RUNNING and server.requests == []
