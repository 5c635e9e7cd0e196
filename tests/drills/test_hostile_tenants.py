"""Drill: one tenant within every budget must not take the engine from the others (issue 17,
items 1-3).

- A schedule slot over many records plus a self-multiplying rule: one runSchedule used to start a
  budget tree per record (49,489 runs and still going); the slot is one tree now.
- A backlog of one organization's runs used to delay another's run behind all of it (first in,
  first out); the queues are per organization now, served in turn.
- retryRun used to start a new tree at depth 0: retrying a run cut by the budget or the chain
  depth made hundreds more. A retry keeps its place in its tree, and retries are rate-limited.
"""

import pytest
from django.conf import settings
from huey.contrib.djhuey import HUEY

from automation.core.choices import RunStatus
from automation.core.models import AutomationLog
from automation.runs.execute import execute_run
from automation.runs.queue import fair_queues
from automation.runs.worker import execute_queued_runs_task
from catalog.models import Product
from tests.drills.test_fan_out_budget import create_multiplying_rule, run_everything
from tests.factories import AutomationRuleFactory, ProductFactory, content_type_of

RUN_SCHEDULE = "mutation($id: ID!) { runSchedule(id: $id) { id status } }"
RETRY = "mutation($id: ID!) { retryRun(logId: $id) { id status depth rootLog { id } } }"


@pytest.mark.django_db
def test_run_schedule_over_many_records_is_one_budget_tree(gql, editor, organization, settings):
    """The issue's attack at a small size: a SCHEDULE rule creating a product per record, and a
    rule creating 3 products per product created. Everything one runSchedule causes stays
    within the slot budgets, whatever the number of records."""
    settings.AUTOMATION_MAX_RUNS_PER_SLOT = 60
    settings.AUTOMATION_MAX_WRITES_PER_SLOT = 150
    for number in range(30):
        ProductFactory(organization=organization, name=f"record {number}")
    schedule = AutomationRuleFactory(
        organization=organization,
        schedule_rule=True,
        schedule="0 3 * * *",
        content_type=content_type_of("catalog.product"),
        actions=[
            {
                "action_type": "CREATE_RECORD",
                "parameters": {"model": "catalog.product", "fields": {"name": "from the slot"}},
            }
        ],
    )
    create_multiplying_rule(editor, organization, actions=3)

    slot = gql(RUN_SCHEDULE, {"id": str(schedule.pk)}, token=editor).ok()["runSchedule"]
    # Without one tree, each of the 30 record runs had 100 runs and 500 writes of its own.
    executed = run_everything(max_runs=1000)

    assert not AutomationLog.objects.filter(status=RunStatus.PENDING).exists()
    tree = AutomationLog.objects.filter(root_log_id=int(slot["id"]))
    ran = tree.exclude(action_logs=[])
    assert executed <= settings.AUTOMATION_MAX_RUNS_PER_SLOT
    assert ran.count() < settings.AUTOMATION_MAX_RUNS_PER_SLOT
    assert tree.filter(error__contains="AUTOMATION_MAX_RUNS_PER_SLOT").exists()
    written = Product.objects.filter(organization=organization).count() - 30
    assert written <= settings.AUTOMATION_MAX_WRITES_PER_SLOT


@pytest.mark.django_db(transaction=True)
def test_another_organizations_run_is_not_queued_behind_a_backlog(organization, other_organization):
    """300 runs of one organization are queued, then one of another: a worker takes the
    newcomer's run within the first two batches, not after the 300."""
    HUEY.flush()
    attacker_rule = AutomationRuleFactory(organization=organization)
    victim_rule = AutomationRuleFactory(organization=other_organization)
    backlog = [ProductFactory(organization=organization) for _ in range(300)]
    victim = ProductFactory(organization=other_organization)
    for product in backlog:
        product.stock += 1
        product.save()  # each save queues one run after its commit
    victim.stock += 1
    victim.save()
    assert fair_queues(HUEY).size() == 301

    executed_before_victim = 0
    for _ in range(301):
        execute_queued_runs_task.call_local()
        if AutomationLog.objects.get(rule=victim_rule).status != RunStatus.PENDING:
            break
        executed_before_victim = (
            AutomationLog.objects.filter(rule=attacker_rule)
            .exclude(status=RunStatus.PENDING)
            .count()
        )
    assert AutomationLog.objects.get(rule=victim_rule).status == RunStatus.SUCCEEDED
    assert executed_before_victim <= settings.AUTOMATION_RUN_BATCH_SIZE
    HUEY.flush()


@pytest.mark.django_db
def test_a_retry_keeps_its_depth_and_tree_and_retries_are_rate_limited(
    gql, editor, organization, settings
):
    settings.AUTOMATION_RETRIES_PER_USER_PER_MINUTE = 3
    rule_id = create_multiplying_rule(editor, organization, actions=1)
    ProductFactory(organization=organization, name="seed")
    run_everything(max_runs=50)
    cut = AutomationLog.objects.get(rule_id=rule_id, error__startswith="Chain depth limit")
    assert cut.depth == settings.AUTOMATION_MAX_CHAIN_DEPTH + 1

    retry = gql(RETRY, {"id": str(cut.pk)}, token=editor).ok()["retryRun"]
    assert retry["depth"] == cut.depth
    assert retry["rootLog"] == {"id": str(cut.root_log_id)}
    assert retry["status"] == "FAILED", "still past the chain depth: not run"
    assert not AutomationLog.objects.filter(status=RunStatus.PENDING).exists()

    deepest_run = AutomationLog.objects.get(rule_id=rule_id, depth=cut.depth - 1)
    retry = gql(RETRY, {"id": str(deepest_run.pk)}, token=editor).ok()["retryRun"]
    assert retry["status"] == "PENDING"
    execute_run(int(retry["id"]))
    caused = AutomationLog.objects.get(parent_log_id=int(retry["id"]))
    assert caused.status == RunStatus.FAILED, "its write's run is past the depth again"

    gql(RETRY, {"id": str(cut.pk)}, token=editor).ok()
    refused = gql(RETRY, {"id": str(cut.pk)}, token=editor).error()
    assert refused["extensions"]["code"] == "RATE_LIMITED"
    assert refused["extensions"]["retryAfter"] >= 1
    assert "AUTOMATION_RETRIES_PER_USER_PER_MINUTE" in refused["message"]
