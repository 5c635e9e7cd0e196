"""runRule and retryRun over HTTP."""

import pytest

from automation.choices import ActionType, RunStatus, TriggerType
from automation.models import AutomationLog
from catalog.models import Product
from tests.factories import AutomationLogFactory, AutomationRuleFactory, ProductFactory

pytestmark = pytest.mark.django_db

RUN = """mutation($id: ID!, $obj: ID, $dry: Boolean) {
  runRule(id: $id, objectId: $obj, dryRun: $dry) {
    id status dryRun trigger objectType objectId triggeredBy { username } rule { id } retryOf { id }
    conditionsMet actionLogs { order actionType status result }
  }
}"""
RETRY = "mutation($id: ID!) { retryRun(logId: $id) { id status retryOf { id } objectId } }"


@pytest.fixture
def manual_rule(organization):
    return AutomationRuleFactory(
        organization=organization,
        manual_rule=True,
        actions=[
            {
                "action_type": ActionType.UPDATE_RECORD,
                "parameters": {"fields": {"description": "Ran on {{ object.name }}"}},
            }
        ],
    )


def test_run_rule_queues_a_pending_manual_run(gql, editor, organization, manual_rule):
    product = ProductFactory(organization=organization)
    log = gql(RUN, {"id": str(manual_rule.pk), "obj": str(product.pk)}, token=editor).ok()[
        "runRule"
    ]
    assert log["status"] == "PENDING"
    assert log["dryRun"] is False
    assert log["trigger"] == "MANUAL"
    assert log["objectType"] == "catalog.product"
    assert log["objectId"] == str(product.pk)
    assert log["triggeredBy"] == {"username": editor.username}
    assert AutomationLog.objects.get(pk=log["id"]).trigger == TriggerType.MANUAL


def test_dry_run_records_what_would_happen_and_writes_nothing_else(
    gql, editor, organization, manual_rule
):
    product = ProductFactory(organization=organization, name="Drill", description="before")
    log = gql(
        RUN, {"id": str(manual_rule.pk), "obj": str(product.pk), "dry": True}, token=editor
    ).ok()["runRule"]
    assert log["dryRun"] is True
    assert log["status"] in {"SUCCEEDED", "SKIPPED"}
    assert log["actionLogs"][0]["actionType"] == "UPDATE_RECORD"
    assert Product.objects.get(pk=product.pk).description == "before"


def test_run_rule_object_errors(gql, editor, organization, other_organization, manual_rule):
    missing = gql(RUN, {"id": str(manual_rule.pk)}, token=editor).error()
    assert missing["extensions"]["code"] == "VALIDATION_ERROR"
    assert "objectId" in missing["extensions"]["fields"]
    foreign = ProductFactory(organization=other_organization)
    assert gql(RUN, {"id": str(manual_rule.pk), "obj": str(foreign.pk)}, token=editor).codes == [
        "NOT_FOUND"
    ]
    modelless = AutomationRuleFactory(
        organization=organization, manual_rule=True, content_type=None
    )
    given = gql(RUN, {"id": str(modelless.pk), "obj": "1"}, token=editor).error()
    assert "objectId" in given["extensions"]["fields"]
    assert not AutomationLog.objects.exists()


def test_retry_run(gql, editor, organization, manual_rule):
    product = ProductFactory(organization=organization)
    running = AutomationLogFactory(
        rule=manual_rule, status=RunStatus.RUNNING, object_id=str(product.pk)
    )
    assert gql(RETRY, {"id": str(running.pk)}, token=editor).codes == ["CONFLICT"]
    failed = AutomationLogFactory(
        rule=manual_rule, status=RunStatus.FAILED, object_id=str(product.pk)
    )
    retry = gql(RETRY, {"id": str(failed.pk)}, token=editor).ok()["retryRun"]
    assert retry["retryOf"] == {"id": str(failed.pk)}
    assert retry["status"] == "PENDING"
    assert retry["objectId"] == str(product.pk)
    assert AutomationLog.objects.filter(retry_of=running).count() == 0
