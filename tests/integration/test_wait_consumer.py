"""Waiting runs through a real Huey consumer (the suite's queue, worker threads): the hint scheduled
when a run starts waiting wakes it in Huey's scheduler, without the sweeper, and meanwhile the run
holds no worker and no share of its organization's workers.

These wait for about a second of real time (Huey's scheduler looks once a second) and poll for
the outcome; nothing is asserted about how long it took."""

import time

import pytest
from huey.contrib.djhuey import HUEY

from automation.core.choices import ActionType, RunStatus
from automation.core.models import AutomationLog
from automation.runs import wakeups
from automation.runs.manual import run_rule
from tests.factories import AutomationRuleFactory, OrganizationFactory, ProductFactory
from tests.integration.test_huey_consumer import consumer  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db(transaction=True)


def describe(text):
    return {
        "action_type": ActionType.UPDATE_RECORD,
        "parameters": {"fields": {"description": text}},
    }


def manual_rule(organization, actions):
    return AutomationRuleFactory(organization=organization, manual_rule=True, actions=actions)


def wait_for(predicate, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def status_of(log_id) -> str:
    return AutomationLog.objects.values_list("status", flat=True).get(pk=log_id)


@pytest.fixture(autouse=True)
def no_hints_remembered():
    wakeups.forget_hints()


def test_a_wait_resumes_by_its_hint_and_frees_the_worker_meanwhile(consumer, settings):  # noqa: F811
    """One worker in the process's share (WORKERS_PER_ORGANIZATION=1, another organization
    about): the waiting run holds neither the worker nor its organization's share, so the
    organization's next run, and another organization's, finish while it waits."""
    settings.AUTOMATION_WORKERS_PER_ORGANIZATION = 1
    acme, globex = OrganizationFactory(), OrganizationFactory()
    pause = {"action_type": ActionType.WAIT, "parameters": {"seconds": 2}}
    waits = manual_rule(acme, [describe("before"), pause, describe("after")])
    quick = manual_rule(acme, [describe("quick")])
    other = manual_rule(globex, [describe("other")])
    product = ProductFactory(organization=acme)
    other_product = ProductFactory(organization=globex)

    waiting = run_rule(waits, object_id=product.pk)
    wait_for(lambda: status_of(waiting.pk) == RunStatus.WAITING, "the run waiting")
    next_run = run_rule(quick, object_id=product.pk)
    other_run = run_rule(other, object_id=other_product.pk)

    def finished(log_id):
        return status_of(log_id) == RunStatus.SUCCEEDED

    wait_for(lambda: finished(next_run.pk) and finished(other_run.pk), "the other runs")
    assert status_of(waiting.pk) == RunStatus.WAITING, "they did not wait for it"
    log = wait_for(
        lambda: AutomationLog.objects.filter(pk=waiting.pk, status=RunStatus.SUCCEEDED).first(),
        "the waiting run going on",
    )
    assert [entry["status"] for entry in log.action_logs] == ["SUCCEEDED"] * 3
    assert log.action_logs[1]["result"]["waited"] is True
    assert HUEY.scheduled_count() == 0, "its hint was used"
