"""Distributed mode end to end: a save in this process, the run in a real `run_huey` process.

Needs the PostgreSQL and Redis of this machine (CI sets DATABASE_URL and REDIS_URL); skipped only
when they are not configured. The worker process gets the test database's name, so it sees the
rows this (transactional) test commits, and the same Redis, so it shares the queue and the rule
index version.
"""

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.db import connection

from automation.core.choices import ActionType, RunStatus, TriggerEvent
from automation.core.models import AutomationLog
from catalog.models import Category
from tests.factories import AutomationRuleFactory, ProductFactory, content_type_of

pytestmark = [
    pytest.mark.skipif(
        not (os.environ.get("REDIS_URL") and os.environ.get("DATABASE_URL")),
        reason="distributed mode needs DATABASE_URL (PostgreSQL) and REDIS_URL",
    ),
    pytest.mark.slow,  # worker processes
]

BASE_DIR = Path(settings.BASE_DIR)


def test_database_url() -> str:
    """DATABASE_URL pointing at the test database pytest-django created."""
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path="/" + connection.settings_dict["NAME"]))


test_database_url.__test__ = False  # a helper, not a test


@pytest.fixture
def worker(transactional_db, tmp_path):
    from huey.contrib.djhuey import HUEY

    assert type(HUEY).__name__ == "FairRedisHuey"
    HUEY.flush()
    output = tmp_path / "run_huey.log"
    env = {**os.environ, "DATABASE_URL": test_database_url(), "LOG_LEVEL": "INFO"}
    with output.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "run_huey", "--workers", "2", "--no-periodic"],
            cwd=BASE_DIR,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process, output
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        HUEY.flush()


def wait_for(predicate, process, output, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting; worker output:\n{output.read_text()[-4000:]}")


def finished_logs(rule):
    return list(
        AutomationLog.objects.filter(rule=rule)
        .exclude(status__in=[RunStatus.PENDING, RunStatus.RUNNING])
        .order_by("id")
    )


def test_a_triggered_rule_runs_in_a_run_huey_process(worker, organization):
    process, output = worker
    product = ProductFactory(organization=organization, name="Lamp", stock=1)
    make_category = AutomationRuleFactory(
        organization=organization,
        name="Categorise",
        trigger_event=TriggerEvent.UPDATED,
        watched_fields=["stock"],
        actions=[
            {
                "action_type": ActionType.CREATE_RECORD,
                "parameters": {
                    "model": "catalog.category",
                    "fields": {"name": "For {{ object.name }} at {{ object.stock }}"},
                },
            },
            {
                "action_type": ActionType.UPDATE_RECORD,
                "parameters": {"fields": {"description": "Filed by the worker"}},
            },
        ],
    )

    product.stock = 2
    product.save()  # the log is committed here and enqueued to Redis on commit
    (log,) = wait_for(lambda: finished_logs(make_category), process, output)
    assert log.status == RunStatus.SUCCEEDED, log.error
    product.refresh_from_db()
    assert product.description == "Filed by the worker"
    assert Category.objects.filter(organization=organization, name="For Lamp at 2").exists()
    # The worker's own write to the product did not re-trigger the rule.
    assert AutomationLog.objects.filter(rule=make_category).count() == 1

    # A rule created here after the worker built its index: the worker's next event sees it,
    # through the rule index version in Redis.
    on_category = AutomationRuleFactory(
        organization=organization,
        name="Announce",
        trigger_event=TriggerEvent.CREATED,
        content_type=content_type_of("catalog.category"),
    )
    product.stock = 3
    product.save()
    (announced,) = wait_for(lambda: finished_logs(on_category), process, output)
    assert announced.status == RunStatus.SUCCEEDED
    assert announced.parent_log.rule_id == make_category.pk
    assert announced.depth == 1
