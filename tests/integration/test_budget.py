"""Fan-out budgets: runs and record writes per organization per minute, per tree for schedule
slots, and writes going on while the counters cannot be reached (automation/fanout/budget.py).

The per-root cut of a multiplying rule is a drill: tests/drills/test_fan_out_budget.py.
"""

import datetime
import logging
import socket

import pytest
import time_machine

from automation.core.choices import ActionStatus, ActionType, RunStatus
from automation.core.models import AutomationLog
from automation.fanout import budget
from automation.runs.execute import execute_run
from automation.runs.manual import retry_run, run_rule
from automation.triggers.schedules import tick
from catalog.models import Category, Product
from tests.factories import AutomationRuleFactory, ProductFactory, content_type_of

pytestmark = pytest.mark.django_db

UTC = datetime.UTC


def at(*parts):
    return datetime.datetime(*parts, tzinfo=UTC)


def travel(moment):
    return time_machine.travel(moment, tick=False)


def update_product(product, stock):
    """A write the organization's UPDATED rules watch; the runs it created, newest last."""
    product.stock = stock
    product.save()
    return list(AutomationLog.objects.filter(object_id=str(product.pk)).order_by("id"))


def run_pending():
    """Execute PENDING runs in creation order until none is left (an in-process worker)."""
    for _ in range(100):
        log = AutomationLog.objects.filter(status=RunStatus.PENDING).order_by("id").first()
        if log is None:
            return
        execute_run(log.pk)
    raise AssertionError("runs kept coming")


def test_runs_over_the_organizations_minute_budget_fail_until_the_next_minute(
    organization, other_organization, settings, editor
):
    settings.AUTOMATION_MAX_RUNS_PER_MINUTE = 2
    rule = AutomationRuleFactory(organization=organization, name="Watcher")
    AutomationRuleFactory(organization=other_organization)
    product = ProductFactory(organization=organization)
    elsewhere = ProductFactory(organization=other_organization)
    message = (
        "Run budget of the organization reached (2 runs in the minute from 10:15 UTC, "
        "AUTOMATION_MAX_RUNS_PER_MINUTE); not run. It resets at 10:16:00 UTC."
    )

    with travel(at(2026, 3, 2, 10, 15, 20)):
        update_product(product, 1)
        update_product(product, 2)
        *within, over = update_product(product, 3)
        manual = run_rule(rule, object_id=product.pk, user=editor)
        (other_run,) = update_product(elsewhere, 1)
    assert [log.status for log in within] == [RunStatus.PENDING] * 2
    for log in (over, manual):
        assert log.status == RunStatus.FAILED
        assert log.error == message
        assert log.finished_at is not None
    assert other_run.status == RunStatus.PENDING, "another organization's budget is its own"

    with travel(at(2026, 3, 2, 10, 16, 0)):
        assert update_product(product, 4)[-1].status == RunStatus.PENDING


def test_a_write_over_the_minute_budget_fails_its_action_and_writes_nothing(organization, settings):
    settings.AUTOMATION_MAX_WRITES_PER_MINUTE = 3
    AutomationRuleFactory(
        organization=organization,
        actions=[
            {
                "action_type": ActionType.UPDATE_RECORD,
                "parameters": {"fields": {"description": "seen"}},
            },
            {
                "action_type": ActionType.CREATE_RECORD,
                "parameters": {"model": "catalog.category", "fields": {"name": "made"}},
                "continue_on_failure": True,
            },
        ],
    )
    product = ProductFactory(organization=organization)

    with travel(at(2026, 3, 2, 10, 15, 20)):
        execute_run(update_product(product, 1)[-1].pk)  # writes 1 and 2
        log = update_product(product, 2)[-1]
        execute_run(log.pk)  # write 3, then the fourth is refused
    log.refresh_from_db()
    assert log.status == RunStatus.PARTIAL
    first, second = log.action_logs
    assert first["status"] == ActionStatus.SUCCEEDED
    assert second["status"] == ActionStatus.FAILED
    assert second["error"] == (
        "Write budget of the organization reached (3 record writes in the minute from "
        "10:15 UTC, AUTOMATION_MAX_WRITES_PER_MINUTE); nothing written. "
        "It resets at 10:16:00 UTC."
    )
    assert Category.objects.filter(name="made").count() == 1, "the first run's only"

    with travel(at(2026, 3, 2, 10, 16, 5)):
        log = update_product(product, 3)[-1]
        execute_run(log.pk)
    log.refresh_from_db()
    assert log.status == RunStatus.SUCCEEDED
    assert Category.objects.filter(organization=organization, name="made").count() == 2


def test_a_schedule_slot_is_one_tree_with_the_slot_budgets(organization, settings):
    """A slot fans out to its record runs under one slot log (their rootLog): the slot is one
    tree, which its record runs and every run they cause count against together, with the slot
    budgets (not the per-root ones, which one record's run would otherwise get each)."""
    settings.AUTOMATION_MAX_RUNS_PER_ROOT = 100
    settings.AUTOMATION_MAX_RUNS_PER_SLOT = 6  # the slot log, 4 record runs, 1 caused run
    products = [ProductFactory(organization=organization, stock=1) for _ in range(4)]
    with travel(at(2026, 3, 2, 7, 0)):
        AutomationRuleFactory(
            organization=organization,
            schedule_rule=True,
            schedule="0 8 * * *",
            content_type=content_type_of("catalog.product"),
            actions=[
                {
                    "action_type": ActionType.UPDATE_RECORD,
                    "parameters": {"fields": {"description": "checked"}},
                }
            ],
        )
    follower = AutomationRuleFactory(
        organization=organization,
        watched_fields=["description"],
        actions=[{"action_type": ActionType.UPDATE_RECORD, "parameters": {"fields": {"stock": 9}}}],
    )
    with travel(at(2026, 3, 2, 8, 0, 5)):
        assert tick() == {"rules": 1, "runs": 4}
        run_pending()

    slot = AutomationLog.objects.get(parent_log__isnull=True, scheduled_for__isnull=False)
    caused = list(AutomationLog.objects.filter(rule=follower).order_by("id"))
    assert len(caused) == 4
    assert {log.root_log_id for log in caused} == {slot.pk}
    assert [log.status for log in caused] == [RunStatus.SUCCEEDED] + [RunStatus.FAILED] * 3
    for log in caused[1:]:
        assert log.error == (
            f"Run budget of the schedule slot {slot.pk} reached (6 runs, "
            "AUTOMATION_MAX_RUNS_PER_SLOT); not run."
        )
    stocks = sorted(
        Product.objects.filter(pk__in=[p.pk for p in products]).values_list("stock", flat=True)
    )
    assert stocks == [1, 1, 1, 9]


def test_a_retry_counts_against_the_tree_it_retries_at_its_depth(organization, settings, editor):
    """Retrying cannot reset a budget: the retry keeps its original's rootLog and depth."""
    settings.AUTOMATION_MAX_RUNS_PER_ROOT = 2  # the root and one caused run
    rule = AutomationRuleFactory(
        organization=organization,
        allow_self_trigger=True,
        actions=[
            {
                "action_type": ActionType.UPDATE_RECORD,
                "parameters": {"fields": {"stock": "{{ object.stock }}1"}},
            }
        ],
    )
    product = ProductFactory(organization=organization, stock=1)
    update_product(product, 2)
    run_pending()
    root, caused, refused = AutomationLog.objects.filter(rule=rule).order_by("id")
    assert (caused.depth, caused.root_log_id) == (1, root.pk)
    assert refused.status == RunStatus.FAILED

    retry = retry_run(caused, user=editor)
    assert (retry.depth, retry.root_log_id, retry.parent_log_id) == (1, root.pk, root.pk)
    assert retry.status == RunStatus.FAILED, "the tree's budget is spent"
    assert "Run budget of the root run" in retry.error


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nobody listens once it is closed


def test_writes_go_on_while_the_budget_counters_cannot_be_reached(organization, settings, caplog):
    """Redis down (the burst drill restarts it mid-burst): the triggering write, its run and
    the run's write all happen, uncounted, with a warning."""
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"
    AutomationRuleFactory(
        organization=organization,
        actions=[{"action_type": ActionType.UPDATE_RECORD, "parameters": {"fields": {"stock": 7}}}],
    )
    product = ProductFactory(organization=organization, stock=1)

    with caplog.at_level(logging.WARNING, logger="automation.fanout.budget"):
        (log,) = update_product(product, 2)
        assert log.status == RunStatus.PENDING
        execute_run(log.pk)
    log.refresh_from_db()
    assert log.status == RunStatus.SUCCEEDED
    product.refresh_from_db()
    assert product.stock == 7
    warnings = [r.getMessage() for r in caplog.records if r.name == "automation.fanout.budget"]
    # The run, its bytes, then its write and its bytes (automation/fanout/budget.py, admit_bytes).
    assert len(warnings) == 4, warnings
    assert sum("fan-out budget not counted" in message for message in warnings) == 2
    assert sum("byte budget not counted" in message for message in warnings) == 2


def store_calls(monkeypatch) -> list[tuple[str, tuple]]:
    """The calls made to the counters' store from now on (each one round trip to Redis):
    (method, arguments), not the calls one makes to another (in memory)."""
    calls, inside = [], []
    store = budget._store()

    def recording(name, real):
        def call(*args):
            if not inside:
                calls.append((name, args))
            inside.append(name)
            try:
                return real(*args)
            finally:
                inside.pop()

        return call

    for name in ("add", "add_amount", "add_amounts", "add_with_amount"):
        monkeypatch.setattr(store, name, recording(name, getattr(store, name)))
    return calls


def test_only_a_created_run_or_an_action_write_is_counted(organization, monkeypatch):
    """A save no rule watches costs no counting (benchmark 1); a watched save counts its run
    and the bytes its log keeps in one call to the store (one round trip to Redis), and the
    run's write and the bytes it stores in one more."""
    calls = store_calls(monkeypatch)
    AutomationRuleFactory(
        organization=organization,
        trigger_event="CREATED",
        actions=[{"action_type": ActionType.UPDATE_RECORD, "parameters": {"fields": {"stock": 7}}}],
    )
    with travel(at(2026, 3, 2, 10, 15, 20)):
        product = ProductFactory(organization=organization)
        assert len(calls) == 1  # its CREATED run, and its bytes
        product.stock = 3
        product.save()  # no rule watches an update
        assert len(calls) == 1
        run_pending()

    (log,) = AutomationLog.objects.all()
    assert log.status == RunStatus.SUCCEEDED
    assert [name for name, _ in calls] == ["add_with_amount", "add_with_amount"]
    (_, ((run, _), (run_bytes, _, _))), (_, ((write, _), (write_bytes, size, _))) = calls
    minute = int(at(2026, 3, 2, 10, 15).timestamp()) // 60
    window = f"automation:budget:org:{organization.pk}:{minute}"
    assert [key for key, _ttl in run] == [f"{window}:runs"]
    assert [key for key, _ttl in run_bytes] == [f"{window}:bytes"]
    assert [key for key, _ttl in write] == [
        f"{window}:writes",
        f"automation:budget:root:{log.pk}:writes",
    ]
    assert [key for key, _ttl in write_bytes] == [
        f"{window}:bytes",
        f"automation:budget:root:{log.pk}:bytes",
    ]
    assert size > 0


def test_counted_together_the_counters_end_as_if_counted_one_after_the_other(
    organization, settings
):
    """A run and its bytes, a write and its bytes, in one round trip each: a refused write
    stores nothing, so its bytes are taken back; a refused run still keeps its log's bytes."""
    settings.AUTOMATION_MAX_WRITES_PER_MINUTE = 1
    settings.AUTOMATION_MAX_RUNS_PER_MINUTE = 1
    settings.AUTOMATION_STORAGE_QUOTA_BYTES = 0
    org = organization.pk
    with travel(at(2026, 3, 2, 10, 15, 20)):
        window = f"automation:budget:org:{org}:{int(at(2026, 3, 2, 10, 15).timestamp()) // 60}"

        def counted(kind):
            (counts, _quota) = budget._store().add_amount([(f"{window}:{kind}", 120)], 0, None)
            return counts[0]

        assert budget.admit_write_with_bytes(org, None, 100) == ""
        refusal = budget.admit_write_with_bytes(org, None, 100)
        assert refusal.startswith("Write budget of the organization reached")
        assert (counted("writes"), counted("bytes")) == (2, 100)  # the refused write: no bytes

        assert budget.admit_run_with_bytes(org, None, 30) == ("", "")
        refused, bytes_refusal = budget.admit_run_with_bytes(org, None, 30)
        assert refused.startswith("Run budget of the organization reached")
        assert bytes_refusal == ""
        assert (counted("runs"), counted("bytes")) == (2, 160)  # its log is written, FAILED


def test_counts_sent_together_answer_as_counted_one_by_one_in_a_command_per_key(monkeypatch):
    """A batch's byte counts (add_amounts) give each call the answer it would have had alone, in
    turn; on Redis with one INCRBY per key, not one per call and key."""
    store = budget._store()
    store.clear()

    def calls(space: str) -> list[tuple]:
        shared, other = f"{space}:org:bytes", f"{space}:org:root:bytes"
        quota = f"{space}:quota"
        store.set(quota, 1_000, 3600)  # measured: it has an expiry
        return [
            ([(shared, 120), (other, 120)], 10, quota),
            ([(shared, 120)], 25, None),
            ([(shared, 120), (other, 120)], 7, f"{space}:never-measured"),
            ([(other, 120)], 3, quota),
        ]

    one_by_one = [store.add_amount(*call) for call in calls("automation:budget:test:a")]

    sent = []
    if hasattr(store, "client"):  # Redis: count the commands of the batch's one round trip
        real_pipeline = store.client.pipeline

        def pipeline(*args, **kwargs):
            pipe = real_pipeline(*args, **kwargs)
            real_execute = pipe.execute

            def execute(*a, **k):
                sent.append([command[0][0] for command in pipe.command_stack])
                return real_execute(*a, **k)

            pipe.execute = execute
            return pipe

        monkeypatch.setattr(store.client, "pipeline", pipeline)
    together = store.add_amounts(calls("automation:budget:test:b"))

    assert together == one_by_one
    assert together[-1] == ([3 + 17], 1_013)  # in turn: the quota after its two shares
    if hasattr(store, "client"):
        (commands,) = sent
        assert commands.count("INCRBY") == 4  # two counters and two quotas, once each
        assert commands.count("EXPIRE") == 2 and commands.count("TTL") == 2
