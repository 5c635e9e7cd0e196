"""A whole run through a real Huey consumer (SQLite-backed queue, worker threads)."""

import os
import subprocess
import sys
import threading
import time

import pytest
from huey.contrib.djhuey import HUEY

from automation.core.choices import ActionType, RunStatus
from automation.core.models import AutomationLog
from automation.management.commands.serve import EmbeddedConsumer
from automation.runs.manual import run_rule
from catalog.models import Category
from tests.factories import AutomationRuleFactory, ProductFactory


@pytest.fixture
def consumer():
    HUEY.flush()
    consumer = EmbeddedConsumer(
        HUEY, workers=2, worker_type="thread", periodic=False, initial_delay=0.01, max_delay=0.05
    )
    consumer.start()
    supervisor = threading.Thread(target=consumer.supervise, daemon=True)
    supervisor.start()
    yield consumer
    consumer.stop(graceful=True)
    supervisor.join(timeout=5)


def wait_for_final(log_id, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = AutomationLog.objects.get(pk=log_id)
        if log.status not in (RunStatus.PENDING, RunStatus.RUNNING):
            return log
        time.sleep(0.02)
    raise AssertionError(f"run {log_id} did not finish: {log.status}")


@pytest.mark.django_db(transaction=True)
def test_a_run_goes_from_pending_to_final_through_the_queue(consumer, organization):
    product = ProductFactory(organization=organization, name="Desk", status="ACTIVE")
    rule = AutomationRuleFactory(
        organization=organization,
        manual_rule=True,
        conditions=[{"field_name": "status", "operator": "EQUALS", "value": "ACTIVE"}],
        actions=[
            {
                "action_type": ActionType.CREATE_RECORD,
                "parameters": {
                    "model": "catalog.category",
                    "fields": {"name": "For {{ object.name }}"},
                },
            },
            {
                "action_type": ActionType.UPDATE_RECORD,
                "parameters": {"fields": {"category": "{{ results.0.id }}"}},
            },
        ],
    )
    log = run_rule(rule, object_id=product.pk)
    assert log.status == RunStatus.PENDING

    log = wait_for_final(log.pk)
    assert log.status == RunStatus.SUCCEEDED, (log.error, log.action_logs)
    assert [entry["status"] for entry in log.action_logs] == ["SUCCEEDED", "SUCCEEDED"]
    category = Category.objects.get(name="Desk".join(["For ", ""]))
    product.refresh_from_db()
    assert product.category_id == category.pk, "action 1 used the id action 0 created"
    assert log.seq >= 6  # claimed, planned, 2 x (running, succeeded), finished


@pytest.mark.slow  # a process of its own
def test_a_worker_loads_the_engine_before_its_first_run():
    # In a fresh interpreter: nothing has imported the action handlers (and httpx) yet; a worker's
    # start-up does, so the first run a worker executes does not pay for the import.
    script = """
import sys, django
django.setup()
from huey.consumer import Worker
from huey.contrib.djhuey import HUEY
import automation.tasks
before = "automation.actions.handlers" in sys.modules or "httpx" in sys.modules
Worker(HUEY, None, 0.1, 1.0, 1.15).initialize()
print(before, "automation.actions.handlers" in sys.modules and "httpx" in sys.modules)
"""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]
