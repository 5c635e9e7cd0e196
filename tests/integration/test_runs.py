"""The life of a run: claim, conditions, actions, final status, resume, chain, manual and dry runs."""

import datetime

import pytest
import time_machine
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection, transaction
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Notification
from automation.core.choices import ActionStatus, ActionType, RunStatus, TriggerEvent, TriggerType
from automation.core.models import AutomationLog
from automation.fanout.chain import Chain, running
from automation.live.events import organization_group
from automation.runs import execute, sweeper, writer
from automation.runs.execute import execute_run
from automation.runs.manual import RunConflict, RunObjectNotFound, retry_run, run_rule
from automation.triggers.outbox import emit_event
from catalog.models import Category
from tests import blocking
from tests.factories import AutomationRuleFactory, CategoryFactory, ProductFactory

pytestmark = pytest.mark.django_db


def update_description(text="Activated {{ object.name }}", **extra):
    return {
        "action_type": ActionType.UPDATE_RECORD,
        "parameters": {"fields": {"description": text}},
        **extra,
    }


def create_category(name="Made by {{ rule.name }}", **extra):
    return {
        "action_type": ActionType.CREATE_RECORD,
        "parameters": {"model": "catalog.category", "fields": {"name": name}},
        **extra,
    }


def status_is(value):
    return {"field_name": "status", "operator": "EQUALS", "value": value}


@pytest.fixture
def product(organization):
    return ProductFactory(organization=organization, status="ACTIVE", name="Lamp")


def pending_run(rule, product, changes=None):
    """The PENDING log emit_event writes for `rule` on `product` (no signals needed)."""
    logs = emit_event(
        product, rule.trigger_event, changes or {"status": {"old": "DRAFT", "new": "ACTIVE"}}
    )
    (log,) = [log for log in logs if log.rule_id == rule.pk]
    return log


class Listener:
    """Collects what the publish hook sends to an organization's group.

    Always on the in-memory layer, which a test can read from synchronously; delivery through
    channels-redis is covered by the live-subscription tests.
    """

    def __init__(self, organization_id):
        self.layer = get_channel_layer()
        self.channel = async_to_sync(self.layer.new_channel)()
        async_to_sync(self.layer.group_add)(organization_group(organization_id), self.channel)

    def messages(self):
        received = []
        while True:
            try:
                received.append(async_to_sync(self._receive)())
            except TimeoutError:
                return received

    async def _receive(self):
        import asyncio

        return await asyncio.wait_for(self.layer.receive(self.channel), timeout=0.05)


@pytest.fixture
def in_memory_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


def test_run_executes_actions_in_order_and_records_each(
    organization, product, django_capture_on_commit_callbacks, in_memory_layer
):
    rule = AutomationRuleFactory(
        organization=organization,
        conditions=[status_is("ACTIVE")],
        actions=[update_description(), create_category()],
    )
    listener = Listener(organization.pk)
    with django_capture_on_commit_callbacks(execute=True):
        log = pending_run(rule, product)
    with django_capture_on_commit_callbacks(execute=True):
        execute_run(log.pk)

    log.refresh_from_db()
    assert log.status == RunStatus.SUCCEEDED
    assert log.conditions_met is True
    assert log.rule_revision == rule.revision
    assert [entry["status"] for entry in log.action_logs] == [ActionStatus.SUCCEEDED] * 2
    assert [entry["attempt"] for entry in log.action_logs] == [1, 1]
    assert all(entry["duration_ms"] is not None for entry in log.action_logs)
    assert log.started_at <= log.finished_at
    product.refresh_from_db()
    assert product.description == "Activated Lamp"
    assert (
        Category.objects.filter(organization=organization, name=f"Made by {rule.name}").count() == 1
    )
    assert (
        log.action_logs[1]["result"]["id"] == Category.objects.get(name=f"Made by {rule.name}").pk
    )

    messages = listener.messages()
    seqs = [m["log"]["seq"] if m["type"] == "automation.log" else m["seq"] for m in messages]
    assert seqs == sorted(seqs), "every message carries the log's increasing seq"
    assert messages[0]["type"] == "automation.log" and messages[0]["log"]["status"] == "PENDING"
    assert messages[-1]["type"] == "automation.log" and messages[-1]["log"]["status"] == "SUCCEEDED"
    action_states = [
        (m["action"]["order"], m["action"]["status"])
        for m in messages
        if m["type"] == "automation.action"
    ]
    assert action_states == [
        (0, "RUNNING"),
        (0, "SUCCEEDED"),
        (1, "RUNNING"),
        (1, "SUCCEEDED"),
    ]
    assert messages[-1]["log"]["seq"] == log.seq


def test_conditions_not_met_skips_with_trace(organization, product):
    rule = AutomationRuleFactory(
        organization=organization,
        conditions=[status_is("DISCONTINUED")],
        actions=[update_description()],
    )
    log = pending_run(rule, product)
    execute_run(log.pk)
    log.refresh_from_db()
    assert log.status == RunStatus.SKIPPED
    assert log.conditions_met is False
    assert log.error == "Conditions not met."  # every leaf evaluated cleanly: the tree is false
    assert (
        log.condition_trace[0]["actual"] == "ACTIVE" and log.condition_trace[0]["passed"] is False
    )
    assert log.action_logs == []
    product.refresh_from_db()
    assert product.description == ""


def test_a_condition_that_cannot_be_evaluated_is_named_in_the_runs_error(organization, product):
    """A rule stored before save-time validation (or changed under it) fails closed, and the run
    says which condition and why instead of "Conditions not met."."""
    rule = AutomationRuleFactory(
        organization=organization,
        conditions=[
            status_is("ACTIVE"),
            {"field_name": "stock", "operator": "LESS_THAN", "value": "five"},
        ],
        actions=[update_description()],
    )
    log = pending_run(rule, product)
    execute_run(log.pk)
    log.refresh_from_db()
    assert log.status == RunStatus.SKIPPED
    assert log.error == (
        "Condition 2 of 2 (conditions.conditions.1): "
        "'five' cannot be compared with stock (IntegerField)."
    )
    assert log.error.endswith(log.condition_trace[1]["error"])


def test_several_conditions_with_errors_name_the_first_and_count_the_rest(organization, product):
    rule = AutomationRuleFactory(
        organization=organization,
        conditions=[
            {"field_name": "status", "operator": "EQUALS", "value": "SOLD_OUT"},
            status_is("ACTIVE"),
            {"field_name": "price", "operator": "CHANGED_TO", "value": "cheap"},
            {"field_name": "stock", "operator": "CONTAINS", "value": 5},
        ],
        actions=[update_description()],
    )
    log = pending_run(rule, product)
    execute_run(log.pk)
    log.refresh_from_db()
    assert log.status == RunStatus.SKIPPED
    assert log.error == (
        'Condition 1 of 4 (conditions.conditions.0): "SOLD_OUT" is not a choice of status '
        "(DRAFT, ACTIVE, DISCONTINUED). (and 2 more conditions with an error)"
    )


def test_duplicate_delivery_does_nothing(organization, product):
    rule = AutomationRuleFactory(organization=organization, actions=[create_category()])
    log = pending_run(rule, product)
    execute_run(log.pk)
    seq = AutomationLog.objects.get(pk=log.pk).seq
    execute_run(log.pk)
    assert AutomationLog.objects.get(pk=log.pk).seq == seq
    assert Category.objects.filter(name__startswith="Made by").count() == 1


def test_a_failure_stops_the_run_and_skips_the_rest(organization, product):
    rule = AutomationRuleFactory(
        organization=organization,
        actions=[
            {
                "action_type": ActionType.UPDATE_RECORD,
                "parameters": {"fields": {"status": "NOT_A_STATUS"}},
            },
            create_category(),
        ],
    )
    log = pending_run(rule, product)
    execute_run(log.pk)
    log.refresh_from_db()
    assert log.status == RunStatus.FAILED
    assert [e["status"] for e in log.action_logs] == [ActionStatus.FAILED, ActionStatus.SKIPPED]
    assert log.action_logs[0]["error"] == (
        'Invalid catalog.product: fields.status: "NOT_A_STATUS" is not a choice of status '
        "(DRAFT, ACTIVE, DISCONTINUED)."
    )
    # The run's error names the failing action (counted from 1, its input path beside) and why.
    assert log.error == (
        f"Action 1 of 2 (actions.0, UPDATE_RECORD) failed: {log.action_logs[0]['error']}"
    )
    assert not Category.objects.filter(name__startswith="Made by").exists()


def test_continue_on_failure_gives_partial(organization, product):
    rule = AutomationRuleFactory(
        organization=organization,
        actions=[
            {
                "action_type": ActionType.UPDATE_RECORD,
                "parameters": {"fields": {"status": "NOT_A_STATUS"}},
                "continue_on_failure": True,
            },
            create_category(),
        ],
    )
    log = pending_run(rule, product)
    execute_run(log.pk)
    log.refresh_from_db()
    assert log.status == RunStatus.PARTIAL
    assert [e["status"] for e in log.action_logs] == [ActionStatus.FAILED, ActionStatus.SUCCEEDED]
    assert log.error == (
        f"Action 1 of 2 (actions.0, UPDATE_RECORD) failed: {log.action_logs[0]['error']}"
    )


def test_a_failed_run_lists_every_failed_action(organization, product):
    rule = AutomationRuleFactory(
        organization=organization,
        actions=[
            {
                "action_type": ActionType.UPDATE_RECORD,
                "parameters": {"fields": {"stock": "lots"}},
                "continue_on_failure": True,
            },
            create_category(),
            {
                "action_type": ActionType.DELETE_RECORD,
                "parameters": {"target": {"model": "catalog.product", "lookup": {"id": 0}}},
            },
            create_category(name="never"),
        ],
    )
    log = pending_run(rule, product)
    execute_run(log.pk)
    log.refresh_from_db()
    assert log.status == RunStatus.FAILED
    statuses = [e["status"] for e in log.action_logs]
    assert statuses == ["FAILED", "SUCCEEDED", "FAILED", "SKIPPED"]
    assert log.error == (
        "Action 1 of 4 (actions.0, UPDATE_RECORD) failed: Invalid catalog.product: fields.stock: "
        "“lots” value must be an integer.; "
        "Action 3 of 4 (actions.2, DELETE_RECORD) failed: No record matched: catalog.product "
        "where {'id': 0} in this organization."
    )


def test_a_successful_run_has_no_error(organization, product):
    rule = AutomationRuleFactory(organization=organization, actions=[create_category()])
    log = pending_run(rule, product)
    execute_run(log.pk)
    log.refresh_from_db()
    assert (log.status, log.error) == (RunStatus.SUCCEEDED, "")


def test_a_relative_date_is_resolved_when_the_run_evaluates(organization, product):
    """A rule for records created more than 7 days ago is judged when the run evaluates, not
    when the event happened: the trace shows "-P7D" and the instant it stood for."""
    rule = AutomationRuleFactory(
        organization=organization,
        conditions=[{"field_name": "created_at", "operator": "LESS_THAN", "value": "-P7D"}],
        actions=[create_category()],
    )
    log = pending_run(rule, product)
    evaluated_at = product.created_at + datetime.timedelta(days=8)
    with time_machine.travel(evaluated_at, tick=False):
        execute_run(log.pk)
    log.refresh_from_db()
    assert log.status == RunStatus.SUCCEEDED
    (entry,) = log.condition_trace
    assert entry["expected"] == "-P7D"
    week_before = evaluated_at - datetime.timedelta(days=7)
    assert entry["resolved_expected"] == week_before.astimezone(datetime.UTC).isoformat()


def test_unexpected_error_never_leaves_a_run_running(organization, product, monkeypatch):
    rule = AutomationRuleFactory(organization=organization, actions=[update_description()])
    log = pending_run(rule, product)

    def explode(rule, ctx, tree=None, **options):
        raise RuntimeError("boom")

    monkeypatch.setattr("automation.conditions.evaluate.evaluate_conditions", explode)
    execute_run(log.pk)
    log.refresh_from_db()
    assert log.status == RunStatus.FAILED
    # The exception's text stays in the server log (it may be the database's): a reference.
    assert log.error.startswith("Internal error (reference ") and "boom" not in log.error
    assert log.finished_at is not None


@pytest.mark.parametrize("change", ["deactivate", "delete"])
def test_rule_changed_before_claim_skips(organization, product, change):
    rule = AutomationRuleFactory(organization=organization, actions=[update_description()])
    log = pending_run(rule, product)
    if change == "deactivate":
        rule.is_active = False
    else:
        rule.deleted_at = timezone.now()
    rule.save()
    execute_run(log.pk)
    log.refresh_from_db()
    assert log.status == RunStatus.SKIPPED
    assert ("deactivated" if change == "deactivate" else "deleted") in log.error
    product.refresh_from_db()
    assert product.description == ""


def test_run_uses_the_rule_as_claimed_and_records_its_revision(organization, product):
    rule = AutomationRuleFactory(organization=organization, actions=[update_description("v1")])
    log = pending_run(rule, product)
    action = rule.actions.get()
    action.parameters = {"fields": {"description": "v2"}}
    action.save()
    rule.revision += 1
    rule.save()
    execute_run(log.pk)
    log.refresh_from_db()
    product.refresh_from_db()
    assert product.description == "v2"
    assert log.rule_revision == rule.revision


class WorkerKilled(BaseException):
    """Stands for SIGKILL: nothing in the run gets to clean up after it."""


def test_killed_worker_resumes_without_reapplying_a_finished_action(
    organization, product, monkeypatch
):
    """Database actions after an outside action commit apart from what came before them."""
    from automation.actions import handlers as actions

    rule = AutomationRuleFactory(
        organization=organization,
        actions=[
            create_category(),
            {"action_type": ActionType.CALL_WEBHOOK, "parameters": {"url": "https://example.com/"}},
            update_description("third action ran"),
        ],
    )
    log = pending_run(rule, product)
    real_get_handler = actions.get_handler
    calls = []

    class Webhook:
        writes_database = False

        def reaches_outside(self, parameters):
            return not self.writes_database

        def execute(self, parameters, ctx, **kwargs):
            calls.append(ctx.log_id)
            return {"status_code": 200}

    class Dies:
        writes_database = True

        def reaches_outside(self, parameters):
            return not self.writes_database

        def execute(self, parameters, ctx, **kwargs):
            raise WorkerKilled

    def handlers(dying):
        def get_handler(action_type):
            if action_type == ActionType.CALL_WEBHOOK:
                return Webhook()
            if action_type == ActionType.UPDATE_RECORD and dying:
                return Dies()
            return real_get_handler(action_type)

        return get_handler

    monkeypatch.setattr(actions, "get_handler", handlers(dying=True))
    with pytest.raises(WorkerKilled):
        execute_run(log.pk)
    log.refresh_from_db()
    assert log.status == RunStatus.RUNNING
    # The killed action's RUNNING state rolled back with its writes: it is still to do.
    assert [e["status"] for e in log.action_logs] == [
        ActionStatus.SUCCEEDED,
        ActionStatus.SUCCEEDED,
        ActionStatus.PENDING,
    ]

    monkeypatch.setattr(actions, "get_handler", handlers(dying=False))
    assert sweeper.sweep()["revived"] == 0, "a fresh heartbeat is not stale"
    AutomationLog.objects.filter(pk=log.pk).update(
        heartbeat_at=timezone.now() - datetime.timedelta(minutes=10),
        created_at=timezone.now() - datetime.timedelta(minutes=10),
    )
    result = sweeper.sweep()
    assert result["revived"] == 1
    log.refresh_from_db()
    assert log.status == RunStatus.PENDING

    execute_run(log.pk)
    log.refresh_from_db()
    assert log.status == RunStatus.SUCCEEDED
    assert Category.objects.filter(name__startswith="Made by").count() == 1, "action 0 ran once"
    assert calls == [log.pk], "the webhook was called once"
    assert [e["attempt"] for e in log.action_logs] == [1, 1, 1]
    product.refresh_from_db()
    assert product.description == "third action ran"


def test_a_run_of_database_actions_commits_once_with_its_claim(organization, product, monkeypatch):
    """A worker killed in the last of several database actions leaves the run untouched."""
    from automation.actions import handlers as actions

    rule = AutomationRuleFactory(
        organization=organization, actions=[create_category(), update_description("second")]
    )
    log = pending_run(rule, product)
    real_get_handler = actions.get_handler

    class Dies:
        writes_database = True

        def reaches_outside(self, parameters):
            return not self.writes_database

        def execute(self, parameters, ctx, **kwargs):
            raise WorkerKilled

    monkeypatch.setattr(
        actions,
        "get_handler",
        lambda action_type: (
            Dies() if action_type == ActionType.UPDATE_RECORD else real_get_handler(action_type)
        ),
    )
    with pytest.raises(WorkerKilled):
        execute_run(log.pk)
    stored = AutomationLog.objects.get(pk=log.pk)
    assert (stored.status, stored.seq, stored.action_logs) == (RunStatus.PENDING, log.seq, [])
    assert not Category.objects.filter(name__startswith="Made by").exists()


def test_a_worker_killed_before_the_plan_leaves_the_run_pending(organization, product, monkeypatch):
    """The claim commits with the plan: a run that dies before it is simply still to do."""
    rule = AutomationRuleFactory(organization=organization, actions=[update_description()])
    log = pending_run(rule, product)

    def killed(rule, ctx, tree=None, **options):
        raise WorkerKilled

    monkeypatch.setattr("automation.conditions.evaluate.evaluate_conditions", killed)
    with pytest.raises(WorkerKilled):
        execute_run(log.pk)
    stored = AutomationLog.objects.get(pk=log.pk)
    assert (stored.status, stored.seq, stored.started_at) == (RunStatus.PENDING, log.seq, None)

    monkeypatch.undo()
    execute_run(log.pk)
    stored.refresh_from_db()
    assert stored.status == RunStatus.SUCCEEDED


def test_a_resumed_run_after_a_stopping_failure_skips_the_rest(organization, product):
    rule = AutomationRuleFactory(
        organization=organization, actions=[update_description("first"), create_category()]
    )
    log = pending_run(rule, product)
    # As a worker that died between recording the failure and finishing would have left it.
    entries = [
        {"order": 0, "action_type": "UPDATE_RECORD", "status": "FAILED", "attempt": 1},
        {"order": 1, "action_type": "CREATE_RECORD", "status": "PENDING", "attempt": 0},
    ]
    AutomationLog.objects.filter(pk=log.pk).update(conditions_met=True, action_logs=entries)
    execute_run(log.pk)
    log.refresh_from_db()
    assert log.status == RunStatus.FAILED
    assert [e["status"] for e in log.action_logs] == [ActionStatus.FAILED, ActionStatus.SKIPPED]
    assert not Category.objects.filter(name__startswith="Made by").exists()


def test_a_worker_that_lost_its_claim_stops_writing(organization, product, monkeypatch):
    """If the sweeper handed the run to another worker, the old worker writes nothing more."""
    from automation.actions import handlers as actions

    rule = AutomationRuleFactory(
        organization=organization,
        actions=[
            {"action_type": ActionType.CALL_WEBHOOK, "parameters": {"url": "https://example.com/"}},
            create_category(),
        ],
    )
    log = pending_run(rule, product)
    real_get_handler = actions.get_handler

    class TakenOver:
        """While this action runs, the sweeper revives the run and another worker claims it."""

        writes_database = False

        def reaches_outside(self, parameters):
            return not self.writes_database

        def execute(self, parameters, ctx, **kwargs):
            AutomationLog.objects.filter(pk=log.pk).update(seq=999)
            return {"status_code": 200}

    monkeypatch.setattr(
        actions,
        "get_handler",
        lambda action_type: (
            TakenOver() if action_type == ActionType.CALL_WEBHOOK else real_get_handler(action_type)
        ),
    )
    execute_run(log.pk)
    log = AutomationLog.objects.get(pk=log.pk)
    assert log.seq == 999, "the old worker's state changes were refused"
    assert log.action_logs[0]["status"] == ActionStatus.RUNNING
    assert not Category.objects.filter(name__startswith="Made by").exists(), "action 1 never ran"


# --- Cause chain ----------------------------------------------------------------------------------


def chain_of(log, depth, names=("A",)):
    return Chain(
        log_id=log.pk,
        root_log_id=log.pk,
        depth=depth,
        rule_id=log.rule_id,
        rule_names=names,
        user_id=None,
    )


def test_events_raised_by_a_run_carry_its_chain(organization, product):
    rule_a = AutomationRuleFactory(organization=organization, name="A")
    rule_b = AutomationRuleFactory(
        organization=organization, name="B", trigger_event=TriggerEvent.CREATED
    )
    parent = pending_run(rule_a, product)
    with running(chain_of(parent, depth=0)):
        (child,) = emit_event(ProductFactory(organization=organization), TriggerEvent.CREATED)
    assert child.rule == rule_b
    assert (child.parent_log_id, child.root_log_id, child.depth) == (parent.pk, parent.pk, 1)
    assert child.context["chain"] == ["A"]


def test_an_update_action_reads_its_record_once_and_the_next_rule_gets_the_changes(
    organization, product
):
    rule_a = AutomationRuleFactory(
        organization=organization, name="A", actions=[update_description("by A")]
    )
    rule_b = AutomationRuleFactory(
        organization=organization, name="B", watched_fields=["description"]
    )
    log = pending_run(rule_a, product)
    with CaptureQueriesContext(connection) as captured:
        execute_run(log.pk)
    reads = [q["sql"] for q in captured.captured_queries if q["sql"].startswith("SELECT")]
    (record_read,) = [sql for sql in reads if 'FROM "catalog_product"' in sql]
    assert "ORDER BY" not in record_read  # one record wanted: the model's ordering adds a sort
    assert not any('FROM "accounts_organization"' in sql for sql in reads), "unchanged relation"

    (child,) = AutomationLog.objects.filter(rule=rule_b)
    assert child.changes["description"] == {"old": "", "new": "by A"}
    assert child.parent_log_id == log.pk


def test_a_rule_is_not_retriggered_by_its_own_run(organization, product):
    rule = AutomationRuleFactory(organization=organization)
    parent = pending_run(rule, product)
    with running(chain_of(parent, depth=0)):
        assert emit_event(product, TriggerEvent.UPDATED, {"stock": {"old": 1, "new": 2}}) == []
    rule.allow_self_trigger = True
    rule.save()
    with running(chain_of(parent, depth=0)):
        (again,) = emit_event(product, TriggerEvent.UPDATED, {"stock": {"old": 1, "new": 2}})
    assert again.depth == 1


def test_chain_deeper_than_the_limit_is_cut_with_a_log_naming_it(organization, product, settings):
    settings.AUTOMATION_MAX_CHAIN_DEPTH = 3
    rule_a = AutomationRuleFactory(organization=organization, name="A", allow_self_trigger=True)
    AutomationRuleFactory(organization=organization, name="B")
    parent = pending_run(rule_a, product)
    with running(chain_of(parent, depth=3, names=("A", "B", "A", "B"))):
        logs = emit_event(product, TriggerEvent.UPDATED, {"stock": {"old": 1, "new": 2}})
    assert {log.rule.name for log in logs} == {"A", "B"}
    for log in logs:
        assert log.status == RunStatus.FAILED
        assert "Chain depth limit (3)" in log.error
        assert f"A -> B -> A -> B -> {log.rule.name}" in log.error
        assert log.depth == 4


# --- Manual runs, dry runs, retries --------------------------------------------------------------


def test_run_rule_needs_an_object_of_its_own_organization(
    organization, other_organization, product
):
    from django.core.exceptions import ValidationError

    rule = AutomationRuleFactory(
        organization=organization, manual_rule=True, actions=[update_description()]
    )
    with pytest.raises(ValidationError):
        run_rule(rule)
    with pytest.raises(RunObjectNotFound):
        run_rule(rule, object_id=ProductFactory(organization=other_organization).pk)
    with pytest.raises(RunObjectNotFound):
        run_rule(rule, object_id="not-a-number")
    log = run_rule(rule, object_id=product.pk)
    assert (log.status, log.trigger, log.object_id) == (
        RunStatus.PENDING,
        TriggerType.MANUAL,
        str(product.pk),
    )
    execute_run(log.pk)
    product.refresh_from_db()
    assert product.description == "Activated Lamp"


def test_dry_run_writes_nothing_but_its_log(organization, product, editor):
    rule = AutomationRuleFactory(
        organization=organization,
        manual_rule=True,
        conditions=[status_is("ACTIVE")],
        actions=[
            update_description(),
            create_category(),
            {
                "action_type": ActionType.SEND_NOTIFICATION,
                "parameters": {
                    "recipients": {"usernames": [editor.username]},
                    "title": "Hi",
                    "body": "{{ object.name }}",
                },
            },
            {
                "action_type": ActionType.CALL_WEBHOOK,
                "parameters": {
                    "url": "https://example.com/hook",
                    "secret": "s3cret",
                    "headers": {"X-Key": "k"},
                    "body": {"name": "{{ object.name }}"},
                },
            },
        ],
    )
    before = {
        "logs": AutomationLog.objects.count(),
        "categories": Category.objects.count(),
        "notifications": Notification.objects.count(),
    }
    log = run_rule(rule, object_id=product.pk, user=editor, dry_run=True)
    assert log.dry_run is True
    assert log.status == RunStatus.SUCCEEDED, log.action_logs
    assert [e["status"] for e in log.action_logs] == [ActionStatus.SUCCEEDED] * 4
    assert AutomationLog.objects.count() == before["logs"] + 1
    assert Category.objects.count() == before["categories"]
    assert Notification.objects.count() == before["notifications"]
    product.refresh_from_db()
    assert product.description == ""
    shown = str(log.action_logs)
    assert "Activated Lamp" in shown
    assert "s3cret" not in shown and "'k'" not in shown


def test_retry_is_a_new_linked_run_refused_while_running(organization, product, editor):
    rule = AutomationRuleFactory(organization=organization, actions=[update_description()])
    log = pending_run(rule, product)
    with pytest.raises(RunConflict):
        retry_run(log, user=editor)
    execute_run(log.pk)
    log.refresh_from_db()
    AutomationLog.objects.filter(pk=log.pk).update(scheduled_for=timezone.now())
    log.refresh_from_db()
    retry = retry_run(log, user=editor)
    assert retry.pk != log.pk
    assert retry.retry_of_id == log.pk
    assert retry.status == RunStatus.PENDING
    assert retry.scheduled_for is None
    assert (retry.event, retry.object_id, retry.changes, retry.context["object"]) == (
        log.event,
        log.object_id,
        log.changes,
        log.context["object"],
    )
    assert retry.triggered_by == editor


def test_conditions_that_cannot_be_evaluated_skip_with_the_reason(
    organization, product, monkeypatch
):
    rule = AutomationRuleFactory(
        organization=organization, conditions=[status_is("ACTIVE")], actions=[create_category()]
    )
    log = pending_run(rule, product)
    monkeypatch.setattr("automation.conditions.tree.load_condition_tree", lambda rule: 1 / 0)
    execute_run(log.pk)
    log.refresh_from_db()
    assert log.status == RunStatus.SKIPPED
    assert log.error.startswith(
        "Conditions could not be evaluated: Internal error (ZeroDivisionError)"
    )
    assert not Category.objects.filter(name__startswith="Made by").exists()


def test_a_run_whose_condition_budget_is_spent_is_skipped_naming_it(
    organization, product, settings
):
    settings.AUTOMATION_CONDITIONS_BUDGET_SECONDS = 0  # spent before the first leaf
    rule = AutomationRuleFactory(
        organization=organization, conditions=[status_is("ACTIVE")], actions=[create_category()]
    )
    log = pending_run(rule, product)
    execute_run(log.pk)
    log.refresh_from_db()
    assert log.status == RunStatus.SKIPPED
    assert log.error.startswith("Conditions not evaluated in time: the budget of 0 s")
    assert "AUTOMATION_CONDITIONS_BUDGET_SECONDS" in log.error
    assert "spent" in log.condition_trace[0]["error"]
    assert not Category.objects.filter(name__startswith="Made by").exists()


# --- Evaluating outside the claim's transaction ----------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_run_being_evaluated_does_not_hold_other_organizations_writes(
    organization, other_organization, product, monkeypatch
):
    """On SQLite the claim's transaction holds the write lock from BEGIN: a run evaluating its
    conditions inside it made another organization's write wait (30 s, then "database is
    locked"). Evaluated before the claim, the run holds nothing while its leaves are slow."""
    rule = AutomationRuleFactory(
        organization=organization, conditions=[status_is("ACTIVE")], actions=[create_category()]
    )
    log = pending_run(rule, product)
    parked = blocking.BlockedEvaluation(monkeypatch)
    run = blocking.start(lambda: execute_run(log.pk))
    try:
        assert parked.entered.wait(timeout=30), "the run never reached its conditions"

        def other_write():
            with transaction.atomic():
                return CategoryFactory(organization=other_organization, name="Elsewhere").pk

        write = blocking.start(other_write)
        committed_meanwhile = write.finished_within(10)
    finally:
        parked.release.set()
    assert committed_meanwhile, "the other organization's write waited for the run"
    assert write.error is None, write.error
    assert run.finished_within(30) and run.error is None, run.error
    log.refresh_from_db()
    assert log.status == RunStatus.SUCCEEDED
    assert Category.objects.filter(organization=other_organization, name="Elsewhere").exists()


def test_a_run_revived_while_it_was_evaluated_is_evaluated_again(
    organization, product, monkeypatch
):
    """The claim finds the seq it read changed: the evaluation is dropped and done again on
    the run as it is now, so a stale verdict is never recorded."""
    from automation.conditions import evaluate as conditions

    rule = AutomationRuleFactory(
        organization=organization, conditions=[status_is("ACTIVE")], actions=[create_category()]
    )
    log = pending_run(rule, product)
    evaluations = []
    real = conditions.evaluate_conditions

    def evaluate(rule, ctx, tree=None, **options):
        evaluations.append(ctx.log_id)
        if len(evaluations) == 1:  # meanwhile another worker claimed, died, and was revived
            AutomationLog.objects.filter(pk=log.pk).update(seq=F("seq") + 2)
        return real(rule, ctx, tree, **options)

    monkeypatch.setattr(conditions, "evaluate_conditions", evaluate)
    execute_run(log.pk)
    log.refresh_from_db()
    assert evaluations == [log.pk, log.pk]
    assert log.status == RunStatus.SUCCEEDED
    assert Category.objects.filter(name__startswith="Made by").count() == 1


# --- Rule definitions cached between runs --------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_runs_reuse_the_rule_definition_until_the_rules_change():
    from automation.index import definitions as rule_definitions
    from automation.index import watching as rule_index
    from tests.factories import OrganizationFactory

    rule_index.reset_local_state()
    rule_definitions.forget()
    organization = OrganizationFactory()
    product = ProductFactory(organization=organization, status="ACTIVE", name="Lamp")
    rule = AutomationRuleFactory(
        organization=organization,
        conditions=[status_is("ACTIVE")],
        actions=[update_description("first")],
    )
    execute_run(pending_run(rule, product).pk)

    log = pending_run(rule, product)
    with CaptureQueriesContext(connection) as captured:
        execute_run(log.pk)
    tables = " ".join(query["sql"] for query in captured.captured_queries)
    for table in ("automationrule", "ruleaction", "conditiongroup", "rulecondition"):
        assert f"automation_{table}" not in tables, table
    product.refresh_from_db()
    assert product.description == "first"

    # An edit that does not bump the revision (the admin, a shell) still bumps the index version.
    action = rule.actions.get()
    action.parameters = {"fields": {"description": "second"}}
    action.save()
    execute_run(pending_run(rule, product).pk)
    product.refresh_from_db()
    assert product.description == "second"


# --- The claim and the guard find a run by primary key, whatever the statistics say --------------


@pytest.mark.django_db(transaction=True)
def test_the_claim_and_the_guard_use_the_primary_key_with_statistics_from_before_a_burst(
    organization, product
):
    if connection.vendor != "postgresql":
        pytest.skip("needs DATABASE_URL (PostgreSQL), whose query planner this tests")
    rule = AutomationRuleFactory(
        organization=organization,
        trigger_event=TriggerEvent.UPDATED,
        actions=[update_description()],
    )
    finished = [pending_run(rule, product) for _ in range(20)]
    AutomationLog.objects.filter(pk__in=[log.pk for log in finished]).update(
        status=RunStatus.SUCCEEDED
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE automation_automationlog")  # no run is PENDING now
    template = finished[0]
    AutomationLog.objects.bulk_create(
        AutomationLog(
            organization_id=template.organization_id,
            rule_id=template.rule_id,
            trigger=template.trigger,
            event=template.event,
            status=RunStatus.PENDING,
            rule_revision=template.rule_revision,
            context=template.context,
        )
        for _ in range(20_000)
    )  # a burst the statistics have not seen
    log = pending_run(rule, product)

    with CaptureQueriesContext(connection) as captured:
        execute_run(log.pk)
    log.refresh_from_db()
    assert log.status == RunStatus.SUCCEEDED
    statements = [
        query["sql"]
        for query in captured.captured_queries
        if "automation_automationlog" in query["sql"].split(" WHERE ")[0]
        and query["sql"].startswith(("SELECT", "UPDATE"))
    ]
    # The read before the conditions are evaluated, the claim and the guarded write.
    assert len(statements) == 3
    with connection.cursor() as cursor:
        for sql in statements:
            cursor.execute(f"EXPLAIN {sql}")
            plan = "\n".join(row[0] for row in cursor.fetchall())
            assert "automation_automationlog_pkey" in plan, plan
            assert "log_status_idx" not in plan, plan


# --- Runs executed in batches ---------------------------------------------------------------------


def batch_of_runs(organization, count, actions=None):
    """`count` products and a PENDING run of one rule for each (the rule updates the product)."""
    rule = AutomationRuleFactory(
        organization=organization,
        conditions=[status_is("ACTIVE")],
        actions=actions or [update_description("batch {{ object.name }}")],
    )
    products = [
        ProductFactory(organization=organization, status="ACTIVE", name=f"P{index}")
        for index in range(count)
    ]
    return rule, products, [pending_run(rule, product) for product in products]


def log_statements(captured) -> list[str]:
    return [q["sql"] for q in captured.captured_queries if "automation_automationlog" in q["sql"]]


def test_a_batch_of_database_runs_is_read_claimed_and_written_together(
    organization, django_capture_on_commit_callbacks, in_memory_layer
):
    """Every run of the batch ends as alone (SUCCEEDED, its update applied once, seq and events
    in order), but the batch reads, locks and writes the run logs with one statement each."""
    _rule, products, logs = batch_of_runs(organization, 5)
    listener = Listener(organization.pk)
    with (
        django_capture_on_commit_callbacks(execute=True),
        CaptureQueriesContext(connection) as captured,
    ):
        execute.execute_runs([log.pk for log in logs])

    statements = log_statements(captured)
    assert len(statements) == 3, statements  # read, lock (SELECT ... WHERE id IN), one UPDATE
    # The actions take no savepoint (the one left is the batch's transaction, nested in the test's).
    savepoints = [q for q in captured.captured_queries if q["sql"].startswith("SAVEPOINT")]
    assert len(savepoints) == 1, savepoints
    assert statements[-1].startswith("5 times: UPDATE")
    for log, product in zip(logs, products, strict=True):
        log.refresh_from_db()
        product.refresh_from_db()
        assert log.status == RunStatus.SUCCEEDED
        assert [entry["status"] for entry in log.action_logs] == [ActionStatus.SUCCEEDED]
        assert product.description == f"batch {product.name}"
    messages = [m for m in listener.messages() if m["type"] == "automation.log"]
    for log in logs:
        seqs = [m["log"]["seq"] for m in messages if m["log"]["id"] == log.pk]
        assert seqs == sorted(set(seqs)) and seqs[-1] == log.seq
        assert [m["log"]["status"] for m in messages if m["log"]["id"] == log.pk][-1] == (
            RunStatus.SUCCEEDED
        )


def test_a_failed_action_in_a_batch_reruns_the_batch_one_by_one(organization, product):
    """A failure rolls the batch back (its actions take no savepoint there); each run is then
    executed alone, so the others succeed once and the failing one is FAILED as alone."""
    _rule, products, logs = batch_of_runs(organization, 3)
    missing = logs[1]
    products[1].delete()  # its UPDATE_RECORD finds no record
    execute.execute_runs([log.pk for log in logs])
    statuses = dict(
        AutomationLog.objects.filter(pk__in=[log.pk for log in logs]).values_list("pk", "status")
    )
    assert statuses == {
        logs[0].pk: RunStatus.SUCCEEDED,
        missing.pk: RunStatus.FAILED,
        logs[2].pk: RunStatus.SUCCEEDED,
    }
    failed = AutomationLog.objects.get(pk=missing.pk)
    assert "No record matched" in failed.action_logs[0]["error"]
    assert failed.action_logs[0]["attempt"] == 1


def test_a_batch_run_changed_since_it_was_read_is_executed_alone(organization, monkeypatch):
    _rule, _products, logs = batch_of_runs(organization, 3)
    real_prepare = execute.prepare

    revived = []

    def prepare(log, budget=None):
        prepared = real_prepare(log, budget=budget)
        if log.pk == logs[1].pk and not revived:  # revived by the sweeper meanwhile
            revived.append(AutomationLog.objects.filter(pk=log.pk).update(seq=F("seq") + 2))
        return prepared

    monkeypatch.setattr(execute, "prepare", prepare)
    alone = []
    real_execute_run = execute.execute_run
    monkeypatch.setattr(
        execute, "execute_run", lambda log_id: (alone.append(log_id), real_execute_run(log_id))
    )
    execute.execute_runs([log.pk for log in logs])
    assert alone == [logs[1].pk]
    assert set(
        AutomationLog.objects.filter(pk__in=[log.pk for log in logs]).values_list(
            "status", flat=True
        )
    ) == {RunStatus.SUCCEEDED}


def test_a_batch_that_fails_as_a_whole_leaves_each_run_to_execute_alone(organization, monkeypatch):
    _rule, products, logs = batch_of_runs(organization, 3)

    def broken(writers):
        raise RuntimeError("the batch's log write failed")

    monkeypatch.setattr(writer.RunWriter, "flush_many", staticmethod(broken))
    execute.execute_runs([log.pk for log in logs])
    for log, product in zip(logs, products, strict=True):
        log.refresh_from_db()
        product.refresh_from_db()
        assert log.status == RunStatus.SUCCEEDED and log.action_logs[0]["attempt"] == 1
        assert product.description == f"batch {product.name}"


def test_runs_with_a_webhook_are_not_batched(organization, monkeypatch):
    """A webhook's RUNNING entry commits before the call goes out: such a run is not batched
    with database-only runs (a lone one runs alone; several are batched apart:
    tests/integration/test_webhook_batches.py)."""
    from automation.actions import handlers as actions

    webhook = {
        "action_type": ActionType.CALL_WEBHOOK,
        "parameters": {"url": "https://example.com/"},
    }
    _rule, _products, database_logs = batch_of_runs(organization, 2)
    _hook_rule, _hook_products, hook_logs = batch_of_runs(organization, 1, actions=[webhook])
    real_get_handler = actions.get_handler

    class Answers:
        writes_database = False

        def reaches_outside(self, parameters):
            return not self.writes_database

        def execute(self, parameters, ctx, **kwargs):
            return {"status_code": 200}

    monkeypatch.setattr(
        actions,
        "get_handler",
        lambda kind: Answers() if kind == ActionType.CALL_WEBHOOK else real_get_handler(kind),
    )
    batched = []
    real_execute_together = execute._execute_together

    def execute_together(batch):
        batched.append([prepared.log.pk for prepared in batch])
        return real_execute_together(batch)

    monkeypatch.setattr(execute, "_execute_together", execute_together)
    from automation.conditions import evaluate as conditions

    evaluated = []
    real_evaluate = conditions.evaluate_conditions

    def evaluate(rule, ctx, tree=None, **options):
        evaluated.append(ctx.log_id)
        return real_evaluate(rule, ctx, tree, **options)

    monkeypatch.setattr(conditions, "evaluate_conditions", evaluate)
    execute.execute_runs([log.pk for log in (*database_logs, *hook_logs)])
    assert batched == [[log.pk for log in database_logs]]
    assert evaluated.count(hook_logs[0].pk) == 1, "evaluated once, not again to run alone"
    logs = AutomationLog.objects.filter(pk__in=[log.pk for log in (*database_logs, *hook_logs)])
    assert set(logs.values_list("status", flat=True)) == {RunStatus.SUCCEEDED}
    hook = AutomationLog.objects.get(pk=hook_logs[0].pk)
    assert hook.action_logs[0]["result"] == {"status_code": 200}


def test_a_single_database_run_is_a_batch_of_one(organization, product):
    """What a worker executes alone when nothing is queued behind it: no savepoint for its
    actions either, and a failure still ends it FAILED as alone."""
    rule = AutomationRuleFactory(organization=organization, actions=[update_description()])
    log = pending_run(rule, product)
    with CaptureQueriesContext(connection) as captured:
        execute.execute_runs([log.pk])
    savepoints = [q for q in captured.captured_queries if q["sql"].startswith("SAVEPOINT")]
    assert len(savepoints) == 1, savepoints  # the batch's, nested in the test's transaction
    log.refresh_from_db()
    assert log.status == RunStatus.SUCCEEDED

    failing = pending_run(rule, product)
    product.delete()
    execute.execute_runs([failing.pk])
    failing.refresh_from_db()
    assert failing.status == RunStatus.FAILED
    assert "No record matched" in failing.action_logs[0]["error"]
