"""Durable waits in the engine (runs/waits.py, runs/wakeups.py): a rule's holdFor and the WAIT
action store the run WAITING with its due time; it is woken once, by the hint or the tick, and
goes on where it stopped. The clock is frozen and moved (time-machine): nothing here sleeps.

Runs are executed in-process (`execute_run`, as a worker would); tests/e2e/test_waits.py and
tests/drills/test_wait_drill.py do the same against real servers, killed in the middle."""

import datetime
import math

import pytest
import time_machine

from automation.core.choices import ActionStatus, ActionType, RunStatus
from automation.core.models import AutomationLog
from automation.runs import retention, sweeper, wakeups
from automation.runs.execute import execute_run, execute_runs
from automation.runs.manual import RunConflict, retry_run, run_rule
from catalog.models import Category
from tests.factories import AutomationRuleFactory, ProductFactory
from tests.integration.test_runs import Listener, in_memory_layer  # noqa: F401 - a fixture

pytestmark = pytest.mark.django_db

START = datetime.datetime(2026, 12, 2, 9, 0, tzinfo=datetime.UTC)
HALF_AN_HOUR = datetime.timedelta(minutes=30)


@pytest.fixture
def clock():
    with time_machine.travel(START, tick=False) as traveller:
        yield traveller


@pytest.fixture(autouse=True)
def no_hints_remembered():
    wakeups.forget_hints()


def low_stock(**extra):
    return {"field_name": "stock", "operator": "LESS_THAN", "value": 5, **extra}


def describe(text="Held: {{ object.stock }} left."):
    return {
        "action_type": ActionType.UPDATE_RECORD,
        "parameters": {"fields": {"description": text}},
    }


def wait(**parameters):
    return {"action_type": ActionType.WAIT, "parameters": parameters}


def create_category(name="Reorder {{ object.name }}"):
    return {
        "action_type": ActionType.CREATE_RECORD,
        "parameters": {"model": "catalog.category", "fields": {"name": name}},
    }


@pytest.fixture
def product(organization):
    return ProductFactory(organization=organization, status="ACTIVE", name="Lamp", stock=10)


def held_rule(organization, hold_for=HALF_AN_HOUR, conditions=None, actions=None):
    return AutomationRuleFactory(
        organization=organization,
        hold_for=hold_for,
        conditions=conditions or [low_stock()],
        actions=actions or [describe()],
    )


def write(product, **fields) -> AutomationLog | None:
    """Save the product with `fields` changed (its signals fire the rules, as any save does);
    the run the write started, if any."""
    before = set(AutomationLog.objects.values_list("pk", flat=True))
    for name, value in fields.items():
        setattr(product, name, value)
    product.save()
    started = AutomationLog.objects.exclude(pk__in=before).order_by("pk")
    return started.first()


def write_stock(product, stock) -> AutomationLog | None:
    return write(product, stock=stock)


def go_on(clock, log, moment=START + HALF_AN_HOUR) -> None:
    """Move the clock to `moment`, wake what is due and execute `log` as a worker would."""
    clock.move_to(moment)
    wakeups.wake_due_runs()
    execute_run(log.pk)
    log.refresh_from_db()


def test_a_held_run_waits_then_executes_when_its_conditions_still_hold(
    organization, product, clock
):
    rule = held_rule(organization)
    log = write_stock(product, 3)

    execute_run(log.pk)
    log.refresh_from_db()
    assert log.status == RunStatus.WAITING
    assert log.resume_at == START + HALF_AN_HOUR
    assert log.conditions_met is True and log.action_logs == []
    assert log.hold == {
        "hold_for": "PT30M",
        "until": "2026-12-02T09:30:00Z",
        "checked_at": None,
        "met": None,
        "trace": [],
        "note": None,
    }
    assert wakeups.wake_due_runs() == 0, "not due yet"

    clock.move_to(START + HALF_AN_HOUR)
    assert wakeups.wake_due_runs() == 1
    execute_run(log.pk)

    log.refresh_from_db()
    product.refresh_from_db()
    assert log.status == RunStatus.SUCCEEDED
    assert product.description == "Held: 3 left."
    assert log.hold["met"] is True and log.hold["checked_at"] == "2026-12-02T09:30:00Z"
    assert [(e["path"], e["actual"], e["passed"]) for e in log.hold["trace"]] == [
        ("conditions.conditions.0", 3, True)
    ]
    assert log.condition_trace[0]["actual"] == 3, "the first check is kept"
    assert log.rule_revision == rule.revision
    assert log.started_at == START and log.finished_at == START + HALF_AN_HOUR


def test_a_held_run_whose_state_changed_back_ends_skipped_saying_so(organization, product, clock):
    held_rule(organization)
    log = write_stock(product, 3)
    execute_run(log.pk)

    clock.move_to(START + datetime.timedelta(minutes=10))
    write_stock(product, 20)  # restocked during the hold: nothing to cancel
    go_on(clock, log)

    product.refresh_from_db()
    assert log.status == RunStatus.SKIPPED
    assert log.error == (
        "Conditions no longer met after holding for PT30M: stock LESS_THAN 5 did not pass "
        "(actual: 20)."
    )
    assert log.hold["met"] is False
    assert [(e["actual"], e["passed"]) for e in log.hold["trace"]] == [(20, False)]
    assert log.conditions_met is True, "the first check passed"
    assert log.context["object"]["stock"] == 20, "the record as it was re-checked"
    assert product.description == ""


def test_a_held_run_whose_record_was_deleted_ends_skipped(organization, product, clock):
    held_rule(organization)
    log = write_stock(product, 3)
    execute_run(log.pk)
    product.delete()

    go_on(clock, log)

    assert log.status == RunStatus.SKIPPED
    assert log.error == "The record was deleted while the run held (PT30M)."
    assert log.hold["met"] is False


def test_the_recheck_sees_the_write_from_before_it_to_the_record_now(organization, clock):
    """A change operator re-checked: CHANGED_TO compares the value before the triggering write
    with the value now, so a record set back to where it was has no change left."""
    product = ProductFactory(organization=organization, status="DRAFT")
    held_rule(
        organization,
        conditions=[{"field_name": "status", "operator": "CHANGED_TO", "value": "ACTIVE"}],
    )
    log = write(product, status="ACTIVE")
    execute_run(log.pk)
    write(product, status="DRAFT")  # back where it was: nothing to cancel

    go_on(clock, log)
    assert log.status == RunStatus.SKIPPED
    assert "status" not in log.changes
    assert log.hold["trace"][0]["actual"] is None, "no change of status to show"


def test_a_change_that_still_holds_passes_the_recheck(organization, clock):
    product = ProductFactory(organization=organization, status="DRAFT")
    held_rule(
        organization,
        conditions=[{"field_name": "status", "operator": "CHANGED_TO", "value": "ACTIVE"}],
    )
    log = write(product, status="ACTIVE")
    execute_run(log.pk)
    write(product, stock=1)  # another field moves meanwhile: the status change still holds

    go_on(clock, log)
    assert log.status == RunStatus.SUCCEEDED
    assert log.changes["status"] == {"old": "DRAFT", "new": "ACTIVE"}
    assert log.changes["stock"]["new"] == 1
    product.refresh_from_db()
    assert product.description == "Held: 1 left.", "the actions see the record as re-checked"


def test_a_waiting_run_is_woken_once_and_executed_once(organization, product, clock):
    held_rule(organization, actions=[create_category()])
    log = write_stock(product, 3)
    execute_run(log.pk)

    clock.move_to(START + HALF_AN_HOUR)
    assert wakeups.wake_due_runs() == 1
    assert wakeups.wake_due_runs() == 0, "a second waker finds it woken"
    assert sweeper.sweep()["woken"] == 0
    execute_run(log.pk)
    execute_run(log.pk)  # a duplicate delivery

    log.refresh_from_db()
    assert log.status == RunStatus.SUCCEEDED
    assert Category.objects.filter(name="Reorder Lamp").count() == 1


def test_the_sweepers_tick_wakes_a_run_whose_hint_was_lost(organization, product, clock):
    held_rule(organization)
    log = write_stock(product, 3)
    execute_run(log.pk)  # its hint is never delivered (on_commit callbacks do not run here)

    clock.move_to(START + HALF_AN_HOUR + datetime.timedelta(seconds=30))
    assert sweeper.sweep()["woken"] == 1
    log.refresh_from_db()
    assert log.status == RunStatus.PENDING


def test_a_woken_run_is_queued_again_only_once_it_waited_its_turn_too_long(
    organization, product, clock, settings
):
    """Woken long after it was created, a run is not re-queued by the sweeper at once (its
    creation is old), but only if it is still PENDING a while after it was woken."""
    settings.AUTOMATION_SWEEP_PENDING_AFTER_SECONDS = 60
    held_rule(organization)
    log = write_stock(product, 3)
    execute_run(log.pk)
    clock.move_to(START + HALF_AN_HOUR)
    wakeups.wake_due_runs()

    clock.move_to(START + HALF_AN_HOUR + datetime.timedelta(seconds=30))
    assert sweeper.sweep()["requeued"] == 0
    clock.move_to(START + HALF_AN_HOUR + datetime.timedelta(seconds=61))
    assert sweeper.sweep()["requeued"] == 1


def test_pausing_schedules_a_hint_that_wakes_the_run(
    organization, product, clock, monkeypatch, django_capture_on_commit_callbacks
):
    scheduled = []
    monkeypatch.setattr(
        wakeups.wake_due_runs_task,
        "schedule",
        lambda args, eta: scheduled.append((args, eta)),
    )
    held_rule(organization, hold_for=datetime.timedelta(seconds=2.5))
    log = write_stock(product, 3)
    with django_capture_on_commit_callbacks(execute=True):
        execute_run(log.pk)

    due_second = START + datetime.timedelta(seconds=3)  # the next whole second
    assert scheduled == [((due_second.isoformat(),), due_second)]
    clock.move_to(due_second)
    with django_capture_on_commit_callbacks(execute=True):
        wakeups.wake_due_runs_task.call_local(due_second.isoformat())
    log.refresh_from_db()
    assert log.status == RunStatus.PENDING


def test_runs_due_in_the_same_second_share_one_hint(organization, clock, monkeypatch):
    scheduled = []
    monkeypatch.setattr(
        wakeups.wake_due_runs_task, "schedule", lambda args, eta: scheduled.append(eta)
    )
    for offset in (0.1, 0.2, 0.9, 1.5):
        wakeups.schedule_wakeup(START + datetime.timedelta(seconds=offset))
    assert scheduled == [
        START + datetime.timedelta(seconds=1),
        START + datetime.timedelta(seconds=2),
    ]
    assert math.ceil(scheduled[0].timestamp()) == scheduled[0].timestamp()


def test_a_wait_action_pauses_the_run_and_it_goes_on_with_earlier_results_kept(
    organization, product, clock
):
    rule = AutomationRuleFactory(
        organization=organization,
        manual_rule=True,
        actions=[
            create_category(),
            wait(seconds=2),
            describe("Reorder category {{ results.0.id }}"),
        ],
    )
    log = run_rule(rule, object_id=product.pk)
    execute_run(log.pk)

    log.refresh_from_db()
    assert log.status == RunStatus.WAITING
    assert log.resume_at == START + datetime.timedelta(seconds=2)
    assert [e["status"] for e in log.action_logs] == [
        ActionStatus.SUCCEEDED,
        ActionStatus.WAITING,
        ActionStatus.PENDING,
    ]
    assert log.action_logs[1]["result"] == {"until": "2026-12-02T09:00:02Z"}

    clock.move_to(START + datetime.timedelta(seconds=2))
    assert wakeups.wake_due_runs() == 1
    execute_run(log.pk)

    log.refresh_from_db()
    product.refresh_from_db()
    category = Category.objects.get(name="Reorder Lamp")  # created once
    assert log.status == RunStatus.SUCCEEDED
    assert product.description == f"Reorder category {category.pk}"
    assert [e["status"] for e in log.action_logs] == [ActionStatus.SUCCEEDED] * 3
    assert [e["attempt"] for e in log.action_logs] == [1, 1, 1]
    assert log.action_logs[1]["result"] == {"until": "2026-12-02T09:00:02Z", "waited": True}
    assert log.action_logs[1]["duration_ms"] == 2000


def test_a_wait_until_a_templated_date_in_the_past_goes_on_at_once(organization, product, clock):
    rule = AutomationRuleFactory(
        organization=organization,
        manual_rule=True,
        actions=[wait(until="{{ now | add_duration('-PT1M') }}"), describe("went on")],
    )
    log = run_rule(rule, object_id=product.pk)
    execute_run(log.pk)
    log.refresh_from_db()
    assert log.status == RunStatus.SUCCEEDED
    assert log.action_logs[0]["result"]["waited"] is False
    assert log.resume_at is None


def test_a_wait_until_a_date_is_its_midnight_in_the_rules_time_zone(organization, product, clock):
    rule = AutomationRuleFactory(
        organization=organization,
        manual_rule=True,
        timezone="Europe/Paris",
        actions=[wait(until="{{ now | add_duration('P1D') | date('%Y-%m-%d') }}")],
    )
    log = run_rule(rule, object_id=product.pk)
    execute_run(log.pk)
    log.refresh_from_db()
    assert log.status == RunStatus.WAITING
    assert log.resume_at == datetime.datetime(2026, 12, 2, 23, 0, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("until", "error"),
    [
        (
            "{{ object.name }}",
            "until: 'Lamp' is not an ISO 8601 date or date-time (such as \"2026-12-24\" or "
            '"2026-12-24T09:00:00Z").',
        ),
        (
            "{{ now | add_duration('P31D') }}",
            "until: 2027-01-02T09:00:00Z is more than P30D away (AUTOMATION_MAX_WAIT_SECONDS).",
        ),
    ],
)
def test_a_wait_whose_until_is_no_moment_fails_the_action(
    organization, product, clock, until, error
):
    rule = AutomationRuleFactory(
        organization=organization, manual_rule=True, actions=[wait(until=until), describe()]
    )
    log = run_rule(rule, object_id=product.pk)
    execute_run(log.pk)
    log.refresh_from_db()
    assert log.status == RunStatus.FAILED
    assert log.action_logs[0]["error"] == error
    assert log.action_logs[1]["status"] == ActionStatus.SKIPPED


def test_a_run_waits_at_each_wait_in_turn_and_holds_first(organization, product, clock):
    held_rule(
        organization,
        hold_for=datetime.timedelta(minutes=5),
        actions=[wait(seconds=60), create_category(), wait(seconds=60), describe()],
    )
    log = write_stock(product, 3)
    moments = []
    for _ in range(4):
        execute_run(log.pk)
        log.refresh_from_db()
        if log.status != RunStatus.WAITING:
            break
        moments.append(log.resume_at - START)
        clock.move_to(log.resume_at)
        wakeups.wake_due_runs()
    assert log.status == RunStatus.SUCCEEDED
    assert moments == [datetime.timedelta(minutes=m) for m in (5, 6, 7)]
    assert Category.objects.filter(name="Reorder Lamp").count() == 1


def test_a_rule_paused_during_the_wait_ends_the_run_skipped(organization, product, clock):
    rule = held_rule(organization)
    log = write_stock(product, 3)
    execute_run(log.pk)
    rule.is_active = False
    rule.save()
    go_on(clock, log)
    assert log.status == RunStatus.SKIPPED
    assert log.error == "The rule was deactivated while the run waited."


def test_held_runs_of_a_batch_all_wait(organization, clock):
    held_rule(organization)
    products = [ProductFactory(organization=organization, stock=10) for _ in range(3)]
    logs = [write_stock(product, 1) for product in products]
    execute_runs([log.pk for log in logs])
    assert set(
        AutomationLog.objects.filter(pk__in=[log.pk for log in logs]).values_list(
            "status", flat=True
        )
    ) == {RunStatus.WAITING}


def test_a_waiting_run_is_neither_purged_nor_retried(organization, product, clock, settings):
    settings.AUTOMATION_LOG_RETENTION_DAYS = {"SKIPPED": 1, "SUCCEEDED": 1, "FAILED": 1}
    held_rule(organization, hold_for=datetime.timedelta(days=30))
    log = write_stock(product, 3)
    execute_run(log.pk)
    clock.move_to(START + datetime.timedelta(days=29))
    retention.purge_logs()
    log.refresh_from_db()
    assert log.status == RunStatus.WAITING
    with pytest.raises(RunConflict, match="still WAITING"):
        retry_run(log)


def test_dry_runs_neither_hold_nor_wait_and_say_they_would(organization, product, clock):
    rule = held_rule(
        organization,
        actions=[wait(seconds=3600), describe()],
    )
    rule.trigger_type, rule.trigger_event = "MANUAL", None
    rule.save()
    log = run_rule(rule, object_id=product.pk, dry_run=True)
    assert log.status == RunStatus.SKIPPED, "stock 10 is not low"

    product.stock = 2
    product.save()
    log = run_rule(rule, object_id=product.pk, dry_run=True)
    assert log.status == RunStatus.SUCCEEDED
    assert log.resume_at is None
    assert log.hold["until"] == "2026-12-02T09:30:00Z"
    assert log.hold["note"] == (
        "A dry run does not wait: a real run would hold for PT30M (until about "
        "2026-12-02T09:30:00Z), then check the conditions again before its actions."
    )
    assert log.action_logs[0]["result"] == {
        "would": "wait",
        "until": "2026-12-02T10:00:00Z",
        "seconds": 3600,
    }


def test_the_live_stream_shows_the_run_waiting(
    organization,
    product,
    clock,
    in_memory_layer,  # noqa: F811 - the fixture imported above
    django_capture_on_commit_callbacks,
):
    held_rule(organization)
    listener = Listener(organization.pk)
    statuses = []

    def step(action):
        with django_capture_on_commit_callbacks(execute=True):
            result = action()
        # Read now: the in-memory layer expires messages by the (moving) clock.
        statuses.extend(m["log"]["status"] for m in listener.messages() if "log" in m)
        return result

    log = step(lambda: write_stock(product, 3))
    step(lambda: execute_run(log.pk))
    clock.move_to(START + HALF_AN_HOUR)
    step(wakeups.wake_due_runs)
    step(lambda: execute_run(log.pk))
    # Claimed, then WAITING (the first check and the hold in one change); woken, claimed
    # again with the second check and the plan recorded (one RUNNING event: one transaction),
    # then the action, and the finish.
    assert statuses == ["PENDING", "RUNNING", "WAITING", "PENDING", "RUNNING", "SUCCEEDED"]


def test_health_reports_how_late_the_most_overdue_waiting_run_is(
    organization, product, clock, client
):
    held_rule(organization)
    log = write_stock(product, 3)
    execute_run(log.pk)
    assert client.get("/healthz").json()["most_overdue_waiting_run_seconds"] is None
    clock.move_to(START + HALF_AN_HOUR + datetime.timedelta(seconds=90))
    assert client.get("/healthz").json()["most_overdue_waiting_run_seconds"] == 90
