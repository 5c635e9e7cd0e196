"""The run path's reads of its logs (automation/runs/reads.py): compiled once per process, and
giving exactly what the QuerySets they replace gave."""

from unittest import mock

import pytest
from django.db import connection, transaction
from django.db.models.sql.compiler import SQLCompiler
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


def test_a_run_compiles_no_sql_for_its_log_reads_once_the_process_compiled_them(organization):
    """Django built the read's and the claim's SQL again for every run; now once per process
    (and number of ids). Counted, never timed: the compilations of log queries during a run."""
    first, second = runs(organization, 2)
    execute_run(first.pk)  # compiles them, if no test before did

    compiled = []
    original = SQLCompiler.as_sql

    def counting(self, *args, **kwargs):
        if self.query.model is AutomationLog:
            compiled.append(self.query)
        return original(self, *args, **kwargs)

    with (
        mock.patch.object(SQLCompiler, "as_sql", counting),
        CaptureQueriesContext(connection) as captured,
    ):
        execute_run(second.pk)

    second.refresh_from_db()
    assert second.status == RunStatus.SUCCEEDED
    assert compiled == []
    log_reads = [
        query["sql"]
        for query in captured.captured_queries
        if query["sql"].startswith("SELECT") and "automation_automationlog" in query["sql"]
    ]
    assert len(log_reads) == 2  # the read before the conditions, the claim
