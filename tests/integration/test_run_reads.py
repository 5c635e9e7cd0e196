"""The run path's statements of its logs (automation/runs/reads.py, inserts.py): compiled once
per process, and giving exactly what the QuerySets and save() they replace gave."""

import contextlib
from unittest import mock

import pytest
from django.db import connection, transaction
from django.db.models.sql.compiler import SQLCompiler, SQLInsertCompiler, SQLUpdateCompiler
from django.test.utils import CaptureQueriesContext

from automation.core.choices import RunStatus
from automation.core.models import AutomationLog
from automation.runs import reads
from automation.runs.execute import execute_run
from automation.triggers.outbox import emit_event
from tests.factories import AutomationRuleFactory, ProductFactory, UserFactory

pytestmark = pytest.mark.django_db


def update_description():
    return {"action_type": "UPDATE_RECORD", "parameters": {"fields": {"description": "seen"}}}


def runs(organization, count: int, user=None) -> list[AutomationLog]:
    AutomationRuleFactory(organization=organization, actions=[update_description()])
    logs = []
    for index in range(count):
        product = ProductFactory(organization=organization, status="ACTIVE", name=f"P{index}")
        with transaction.atomic():
            (log,) = emit_event(product, "UPDATED", {"stock": {"old": 1, "new": 2}})
        logs.append(log)
    if user is not None:
        AutomationLog.objects.filter(pk__in=[log.pk for log in logs[::2]]).update(triggered_by=user)
    return logs


@contextlib.contextmanager
def compilations(model, compiler=SQLCompiler):
    """The queries of `model` that `compiler` turned into SQL inside the block (a list)."""
    compiled = []
    original = compiler.as_sql

    def counting(self, *args, **kwargs):
        if self.query.model is model:
            compiled.append(self.query)
        return original(self, *args, **kwargs)

    with mock.patch.object(compiler, "as_sql", counting):
        yield compiled


def values(log: AutomationLog) -> dict:
    return {field.attname: getattr(log, field.attname) for field in log._meta.concrete_fields}


@pytest.mark.parametrize("count", [1, 3])
def test_read_logs_gives_what_the_queryset_gave(organization, count):
    user = UserFactory()
    ids = [log.pk for log in runs(organization, count, user=user)]
    expected = list(
        AutomationLog.objects.select_related("triggered_by").filter(pk__in=ids).order_by("pk")
    )

    got = reads.read_logs(reversed(ids))

    assert [log.pk for log in got] == sorted(ids)
    for log, wanted in zip(got, expected, strict=True):
        assert values(log) == values(wanted)  # JSON decoded, dates aware, as the ORM gives them
        assert log._state.adding is False and log._state.db == "default"
        with CaptureQueriesContext(connection) as captured:
            triggered_by = log.triggered_by  # joined: no query
        assert captured.captured_queries == []
        assert triggered_by == wanted.triggered_by
        if triggered_by is not None:
            assert values(triggered_by) == values(wanted.triggered_by)


def test_lock_states_reads_status_and_seq_under_the_claims_lock(organization):
    logs = runs(organization, 2)
    with transaction.atomic():
        states = reads.lock_states([log.pk for log in logs])
    assert states == {log.pk: (RunStatus.PENDING, log.seq) for log in logs}
    assert reads.read_logs([]) == [] and reads.lock_states([]) == {}


def second_run(organization, compiler) -> tuple[list, list[dict]]:
    """Execute two runs; of the second, the log queries `compiler` compiled and the queries
    sent (the first compiles whatever no test before compiled)."""
    first, second = runs(organization, 2)
    execute_run(first.pk)
    with (
        compilations(AutomationLog, compiler) as compiled,
        CaptureQueriesContext(connection) as captured,
    ):
        execute_run(second.pk)
    second.refresh_from_db()
    assert second.status == RunStatus.SUCCEEDED
    sent = [query["sql"] for query in captured.captured_queries]
    return compiled, [sql for sql in sent if "automation_automationlog" in sql]


def test_a_run_compiles_no_sql_for_its_log_reads_once_the_process_compiled_them(organization):
    """Django built the read's and the claim's SQL again for every run; now once per process
    (and number of ids). Counted, never timed: the compilations of log queries during a run."""
    compiled, sent = second_run(organization, SQLCompiler)
    assert compiled == []
    log_reads = [sql for sql in sent if sql.startswith("SELECT")]
    assert len(log_reads) == 2  # the read before the conditions, the claim


def test_a_lone_runs_state_writes_compile_no_update_once_the_process_compiled_them(organization):
    """The guarded UPDATE of each state change went through QuerySet.update, which Django
    compiled again for every change; now once per process and set of fields. Counted: the
    UPDATE compilations of logs during a run, and its guarded writes still sent."""
    compiled, sent = second_run(organization, SQLUpdateCompiler)
    assert compiled == []
    guarded = [sql for sql in sent if sql.startswith("UPDATE")]
    assert guarded and all('"seq" = ' in sql.split("WHERE")[1] for sql in guarded)


# --- The new run's log, inserted with SQL compiled once (automation/runs/inserts.py) -----------


def new_log(organization, **fields) -> AutomationLog:
    rule = AutomationRuleFactory(organization=organization)
    values = {
        "organization_id": organization.pk,
        "rule": rule,
        "trigger": "EVENT",
        "event": "UPDATED",
        "object_id": "7",
        "context": {"object": {"name": "Lamp\u00e9"}},
        "changes": {"stock": {"old": 1, "new": 2}},
        **fields,
    }
    return AutomationLog(**values)


def stored(log: AutomationLog) -> dict:
    row = values(AutomationLog.objects.get(pk=log.pk))
    for name in ("id", "created_at", "updated_at", "run_uuid"):
        row.pop(name)
    return row


def test_insert_log_writes_what_djangos_save_writes(organization):
    from accounts.current import acting_as
    from automation.runs.inserts import insert_log

    user = UserFactory()
    for attempt in range(2):  # the first compiles the statement, the second reuses it
        with acting_as(user):
            by_django = new_log(organization, status="FAILED", error=f"no {attempt}")
            by_django.save(force_insert=True)
            inserted = insert_log(new_log(organization, status="FAILED", error=f"no {attempt}"))
        assert inserted.pk is not None and inserted._state.adding is False
        mine, theirs = stored(inserted), stored(by_django)
        assert mine.pop("rule_id") != theirs.pop("rule_id")  # a rule each
        assert mine == theirs
        assert mine["created_by_id"] == mine["updated_by_id"] == user.pk
        reread = AutomationLog.objects.get(pk=inserted.pk)
        assert reread.created_at == inserted.created_at and reread.run_uuid == inserted.run_uuid


def test_a_run_compiles_no_insert_once_the_process_compiled_it(organization):
    product = ProductFactory(organization=organization, status="ACTIVE")
    AutomationRuleFactory(organization=organization, actions=[update_description()])
    with transaction.atomic():
        emit_event(product, "UPDATED", {})  # compiles it, if no test before did

    with (
        compilations(AutomationLog, SQLInsertCompiler) as compiled,
        CaptureQueriesContext(connection) as captured,
        transaction.atomic(),
    ):
        (log,) = emit_event(product, "UPDATED", {"stock": {"old": 1, "new": 2}})
    assert compiled == []
    inserts = [q["sql"] for q in captured.captured_queries if q["sql"].startswith("INSERT")]
    assert len([sql for sql in inserts if "automation_automationlog" in sql]) == 1
    assert AutomationLog.objects.get(pk=log.pk).changes == {"stock": {"old": 1, "new": 2}}


def test_a_receiver_of_the_logs_saves_gets_its_signals(organization):
    """Django's save() sends pre_save and post_save; with a receiver connected, logs are saved
    by Django, so it gets them."""
    from django.db.models.signals import post_save

    from automation.runs.inserts import insert_log

    seen = []

    def receiver(sender, instance, created, **kwargs):
        seen.append((instance.pk, created))

    post_save.connect(receiver, sender=AutomationLog, dispatch_uid="test.inserts")
    try:
        log = insert_log(new_log(organization))
    finally:
        post_save.disconnect(sender=AutomationLog, dispatch_uid="test.inserts")
    assert seen == [(log.pk, True)]
