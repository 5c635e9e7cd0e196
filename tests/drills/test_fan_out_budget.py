"""Drill: a rule that multiplies itself stops at its tree's fan-out budget, visibly.

A self-triggering rule whose actions each create a record of the model it watches turns one
write into actions^depth runs: with 3 CREATE_RECORD actions and the default chain depth, 1,093
products from one write; with 50 actions (the most a rule may have), 50^6. The rule is created
over the API like any member could, then one product is written and every run is executed
in-process in creation order. The tree stops at AUTOMATION_MAX_RUNS_PER_ROOT runs or
AUTOMATION_MAX_WRITES_PER_ROOT writes, whichever comes first, with FAILED logs or actions that
name the budget; another organization's rule is not held back by it.
"""

import json

import pytest
from django.conf import settings
from django.test import Client

from automation.core.choices import ActionStatus, RunStatus
from automation.core.models import AutomationLog
from automation.runs.execute import execute_run
from catalog.models import Product
from tests.factories import AutomationRuleFactory, ProductFactory

pytestmark = pytest.mark.django_db

CREATE = "mutation($input: RuleInput!) { createRule(input: $input) { id } }"


def create_multiplying_rule(editor, organization, actions: int) -> int:
    """Over the API: on every product created, create `actions` products (allowSelfTrigger)."""
    rule = {
        "organization": str(organization.pk),
        "name": f"Multiply by {actions}",
        "triggerType": "EVENT",
        "model": "catalog.product",
        "triggerEvent": "CREATED",
        "allowSelfTrigger": True,
        "actions": [
            {
                "actionType": "CREATE_RECORD",
                "parameters": {
                    "model": "catalog.product",
                    "fields": {"name": f"copy {number} of {{{{ object.name }}}}"},
                },
            }
            for number in range(actions)
        ],
    }
    response = Client().post(
        "/graphql/",
        data=json.dumps({"query": CREATE, "variables": {"input": rule}}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {editor.raw_token}",
    )
    body = json.loads(response.content)
    assert not body.get("errors"), body
    return int(body["data"]["createRule"]["id"])


def run_everything(max_runs: int) -> int:
    """Execute PENDING runs in creation order (an in-process worker); how many were executed.

    Bounded, so a tree the budget does not stop fails the test instead of running for hours.
    """
    executed = 0
    while executed < max_runs:
        log = AutomationLog.objects.filter(status=RunStatus.PENDING).order_by("id").first()
        if log is None:
            break
        execute_run(log.pk)
        executed += 1
    return executed


def tree_of(rule_id: int) -> tuple[AutomationLog, list[AutomationLog]]:
    root, *caused = AutomationLog.objects.filter(rule_id=rule_id).order_by("id")
    assert root.depth == 0
    assert {log.root_log_id for log in caused} == {root.pk}
    return root, caused


def test_three_creates_per_run_stop_at_the_run_budget(editor, organization):
    """The issue's case: 1 write became 1,093 products and 1,093 runs. Now the tree holds
    AUTOMATION_MAX_RUNS_PER_ROOT runs; those it could not hold are FAILED logs naming the budget
    (visible in a dashboard of failures), never run; products stay under the write budget."""
    runs_budget = settings.AUTOMATION_MAX_RUNS_PER_ROOT
    rule_id = create_multiplying_rule(editor, organization, actions=3)
    ProductFactory(organization=organization, name="seed")

    run_everything(max_runs=2 * runs_budget)

    root, caused = tree_of(rule_id)
    assert not AutomationLog.objects.filter(status=RunStatus.PENDING).exists()
    ran = [log for log in (root, *caused) if log.action_logs]  # a refused run plans nothing
    refused = [log for log in caused if not log.action_logs]
    assert len(ran) == runs_budget
    assert {log.status for log in ran} == {RunStatus.SUCCEEDED}
    assert refused, "the budget cut the tree"
    for log in refused:
        assert log.status == RunStatus.FAILED
        assert log.error == (
            f"Run budget of the root run {root.pk} reached ({runs_budget} runs, "
            "AUTOMATION_MAX_RUNS_PER_ROOT); not run."
        )
        assert log.action_logs == []
    products = Product.objects.filter(organization=organization).count()
    assert products == 1 + 3 * runs_budget
    assert products <= 1 + settings.AUTOMATION_MAX_WRITES_PER_ROOT


def test_fifty_creates_per_run_stop_at_the_write_budget(editor, organization, other_organization):
    """50 actions (the most a rule may have): the tree writes AUTOMATION_MAX_WRITES_PER_ROOT
    products, then the next CREATE_RECORD fails naming the budget, writes nothing, and its run
    ends FAILED with the rest skipped. Another organization's rule still runs."""
    writes_budget = settings.AUTOMATION_MAX_WRITES_PER_ROOT
    rule_id = create_multiplying_rule(editor, organization, actions=50)
    ProductFactory(organization=organization, name="seed")

    run_everything(max_runs=2 * settings.AUTOMATION_MAX_RUNS_PER_ROOT)

    root, caused = tree_of(rule_id)
    assert not AutomationLog.objects.filter(status=RunStatus.PENDING).exists()
    assert Product.objects.filter(organization=organization).count() == 1 + writes_budget
    message = (
        f"Write budget of the root run {root.pk} reached ({writes_budget} record writes, "
        "AUTOMATION_MAX_WRITES_PER_ROOT); nothing written."
    )
    stopped = [log for log in caused if log.action_logs and log.action_logs[0]["error"] == message]
    assert stopped, "a run's first CREATE_RECORD met the exhausted budget"
    for log in stopped:
        assert log.status == RunStatus.FAILED
        assert log.action_logs[0]["status"] == ActionStatus.FAILED
        assert {entry["status"] for entry in log.action_logs[1:]} == {ActionStatus.SKIPPED}
    executed = [log for log in (root, *caused) if log.action_logs]
    assert len(executed) <= settings.AUTOMATION_MAX_RUNS_PER_ROOT

    other_rule = AutomationRuleFactory(
        organization=other_organization,
        actions=[{"action_type": "UPDATE_RECORD", "parameters": {"fields": {"stock": 5}}}],
    )
    product = ProductFactory(organization=other_organization, stock=1)
    product.stock = 2
    product.save()
    (log,) = AutomationLog.objects.filter(rule=other_rule)
    execute_run(log.pk)
    log.refresh_from_db()
    assert log.status == RunStatus.SUCCEEDED
