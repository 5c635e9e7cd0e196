"""A benchmark starts without the runs an earlier one left queued or unfinished
(bench/data.py, drop_leftover_runs): its server and workers then do its own work only."""

import pytest
from django.db import transaction
from huey.contrib.djhuey import HUEY

from automation.core.choices import RunStatus
from automation.core.models import AutomationLog
from automation.runs.queue import fair_queues
from automation.triggers.outbox import emit_event
from bench.data import drop_leftover_runs
from tests.factories import AutomationLogFactory, AutomationRuleFactory, ProductFactory

pytestmark = pytest.mark.django_db(transaction=True)


def test_leftover_runs_are_taken_off_the_queue_and_ended(organization):
    AutomationRuleFactory(organization=organization)
    product = ProductFactory(organization=organization, status="ACTIVE")
    with transaction.atomic():
        (queued,) = emit_event(product, "UPDATED", {"stock": {"old": 1, "new": 2}})
    running = AutomationLogFactory(
        rule=AutomationRuleFactory(organization=organization), status=RunStatus.RUNNING
    )
    done = AutomationLogFactory(
        rule=AutomationRuleFactory(organization=organization), status=RunStatus.SUCCEEDED
    )
    assert fair_queues(HUEY).size() == 1

    assert drop_leftover_runs() == 2

    statuses = dict(AutomationLog.objects.values_list("pk", "status"))
    assert statuses == {
        queued.pk: RunStatus.SKIPPED,
        running.pk: RunStatus.SKIPPED,
        done.pk: RunStatus.SUCCEEDED,
    }
    assert fair_queues(HUEY).size() == 0 and HUEY.pending_count() == 0
