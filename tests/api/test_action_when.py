"""An action's own `when` over HTTP (runs/when.py): if/else by two opposite `when`s, conditions
on earlier actions' results, the checks at save with their input paths, dry runs, batches.

Real runs execute in-process (`run_pending`, as a worker would); the e2e test
(tests/e2e/test_action_language.py) runs the same on a real server."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from automation.core.choices import RunStatus
from automation.core.models import AutomationLog, AutomationRule, RuleAction
from automation.runs import execute
from tests.factories import ProductFactory

pytestmark = pytest.mark.django_db

CREATE = """mutation($input: RuleInput!) {
  createRule(input: $input) { id actions { order actionType when } }
}"""
UPDATE = """mutation($id: ID!, $input: RuleUpdateInput!) {
  updateRule(id: $id, input: $input) { revision actions { order when } }
}"""
RUN = """mutation($id: ID!, $obj: ID, $dry: Boolean) {
  runRule(id: $id, objectId: $obj, dryRun: $dry) { id }
}"""
LOG = """query($id: ID!) {
  log(id: $id) {
    status error
    actionLogs {
      order status error result whenMet
      whenTrace { path field operator expected actual passed error }
    }
  }
}"""


def run_pending():
    """Execute PENDING runs in creation order until none is left (an in-process worker)."""
    for _ in range(20):
        log = AutomationLog.objects.filter(status=RunStatus.PENDING).order_by("id").first()
        if log is None:
            return
        execute.execute_run(log.pk)
    raise AssertionError("runs kept coming")


def when(*conditions, logic="AND", negate=False):
    return {"logic": logic, "negate": negate, "conditions": list(conditions)}


def leaf(field, operator, value=None):
    return {"field": field, "operator": operator, "value": value}


def describe(text, condition=None):
    action = {
        "actionType": "UPDATE_RECORD",
        "parameters": {"fields": {"description": text}},
    }
    if condition is not None:
        action["when"] = condition
    return action


def if_else_rule(organization):
    """Low stock or plenty: two actions with opposite `when`s."""
    return {
        "organization": str(organization.pk),
        "name": "Stock level",
        "triggerType": "MANUAL",
        "model": "catalog.product",
        "actions": [
            describe("low: {{ object.stock }}", when(leaf("stock", "LESS_THAN", 5))),
            describe("plenty", when(leaf("stock", "LESS_THAN", 5), negate=True)),
        ],
    }


def create(gql, user, rule_input):
    return gql(CREATE, {"input": rule_input}, token=user).ok()["createRule"]


def run(gql, user, rule_id, product, dry=False):
    answer = gql(RUN, {"id": rule_id, "obj": str(product.pk), "dry": dry}, token=user)
    log_id = answer.ok()["runRule"]["id"]
    run_pending()
    return gql(LOG, {"id": log_id}, token=user).ok()["log"]


def test_two_opposite_whens_are_if_else(gql, editor, organization):
    rule = create(gql, editor, if_else_rule(organization))
    assert rule["actions"][0]["when"] == {
        "logic": "AND",
        "negate": False,
        "conditions": [{"field": "stock", "operator": "LESS_THAN", "value": 5, "negate": False}],
        "groups": [],
    }
    assert rule["actions"][1]["when"]["negate"] is True
    low = ProductFactory(organization=organization, stock=3)
    plenty = ProductFactory(organization=organization, stock=12)

    on_low = run(gql, editor, rule["id"], low)
    on_plenty = run(gql, editor, rule["id"], plenty)

    # Some actions skipped by their `when`, none failed: the run SUCCEEDED.
    assert (on_low["status"], on_low["error"]) == ("SUCCEEDED", None)
    assert [entry["status"] for entry in on_low["actionLogs"]] == ["SUCCEEDED", "SKIPPED"]
    assert [entry["whenMet"] for entry in on_low["actionLogs"]] == [True, False]
    skipped = on_low["actionLogs"][1]
    assert skipped["error"] == "When not met." and skipped["result"] is None
    assert skipped["whenTrace"] == [
        {
            "path": "actions.1.when.conditions.0",
            "field": "stock",
            "operator": "LESS_THAN",
            "expected": 5,
            "actual": 3,
            "passed": True,
            "error": None,
        }
    ]
    assert on_plenty["status"] == "SUCCEEDED"
    assert [entry["status"] for entry in on_plenty["actionLogs"]] == ["SKIPPED", "SUCCEEDED"]
    assert on_plenty["actionLogs"][0]["error"] == (
        "When not met: stock LESS_THAN 5 did not pass (actual: 12)."
    )
    low.refresh_from_db()
    plenty.refresh_from_db()
    assert (low.description, plenty.description) == ("low: 3", "plenty")


def test_a_dry_run_evaluates_when_too(gql, editor, organization):
    rule = create(gql, editor, if_else_rule(organization))
    product = ProductFactory(organization=organization, stock=2, description="as it was")
    dry = run(gql, editor, rule["id"], product, dry=True)
    assert dry["status"] == "SUCCEEDED"
    assert [entry["status"] for entry in dry["actionLogs"]] == ["SUCCEEDED", "SKIPPED"]
    assert dry["actionLogs"][0]["result"]["fields"] == {"description": "low: 2"}
    product.refresh_from_db()
    assert product.description == "as it was"


def test_when_tests_the_results_of_earlier_actions(gql, editor, organization):
    """Action 2 runs only if action 0 left the stock low; action 3 only if action 1, skipped by
    its own `when`, gave no result, and reads it with a default."""
    rule = create(
        gql,
        editor,
        {
            "organization": str(organization.pk),
            "name": "Chained",
            "triggerType": "MANUAL",
            "model": "catalog.product",
            "actions": [
                {
                    "actionType": "UPDATE_RECORD",
                    "parameters": {"fields": {"stock": "{{ object.stock - 4 }}"}},
                },
                describe("never", when(leaf("results.0.model", "EQUALS", "catalog.category"))),
                describe(
                    "restock {{ results.0.record.stock }}",
                    when(leaf("results.0.record.stock", "LESS_THAN", 5)),
                ),
                {
                    "actionType": "CREATE_RECORD",
                    "parameters": {
                        "model": "catalog.category",
                        "fields": {"name": "after {{ results.1.id | default('nothing') }}"},
                    },
                    "when": when(leaf("results.1", "IS_NULL")),
                },
            ],
        },
    )
    product = ProductFactory(organization=organization, stock=7)
    log = run(gql, editor, rule["id"], product)
    assert log["status"] == "SUCCEEDED", log
    statuses = [entry["status"] for entry in log["actionLogs"]]
    assert statuses == ["SUCCEEDED", "SKIPPED", "SUCCEEDED", "SUCCEEDED"]
    assert log["actionLogs"][1]["whenTrace"][0]["actual"] == "catalog.product"
    assert log["actionLogs"][2]["whenTrace"][0]["actual"] == 3
    assert log["actionLogs"][3]["whenTrace"][0]["actual"] is None
    assert log["actionLogs"][3]["result"]["record"]["name"] == "after nothing"
    product.refresh_from_db()
    assert (product.stock, product.description) == (3, "restock 3")


def test_a_when_that_cannot_be_evaluated_fails_its_action(gql, editor, organization):
    """Fail closed, loudly: a condition in error is not "not met" (that would silently skip the
    branch); the action FAILS with the reason, and continueOnFailure applies."""
    rule = create(
        gql,
        editor,
        {
            "organization": str(organization.pk),
            "name": "Broken when",
            "triggerType": "MANUAL",
            "model": "catalog.product",
            "actions": [
                describe("first"),
                {
                    **describe("second", when(leaf("results.0.model", "GREATER_THAN", 5))),
                    "continueOnFailure": True,
                },
                describe("third"),
            ],
        },
    )
    product = ProductFactory(organization=organization)
    log = run(gql, editor, rule["id"], product)
    assert log["status"] == "PARTIAL"
    assert [entry["status"] for entry in log["actionLogs"]] == ["SUCCEEDED", "FAILED", "SUCCEEDED"]
    reason = (
        "When could not be evaluated: condition 1 of 1 (actions.1.when.conditions.0): "
        'GREATER_THAN a number cannot be compared with text ("catalog.product") from the result.'
    )
    assert log["actionLogs"][1]["error"] == reason
    assert log["error"] == f"Action 2 of 3 (actions.1, UPDATE_RECORD) failed: {reason}"
    assert log["actionLogs"][1]["whenMet"] is False


def test_a_skipped_webhook_is_never_called_and_the_run_goes_on(gql, editor, organization):
    """An action with outside effects is decided before its RUNNING state is committed: skipped,
    it never goes out (no receiver exists here), and the database actions after it run."""
    rule = create(
        gql,
        editor,
        {
            "organization": str(organization.pk),
            "name": "Maybe call",
            "triggerType": "MANUAL",
            "model": "catalog.product",
            "actions": [
                {
                    "actionType": "CALL_WEBHOOK",
                    "parameters": {"url": "https://hooks.example.com/stock"},
                    "when": when(leaf("status", "EQUALS", "ACTIVE")),
                },
                describe("not called: {{ results.0 | default('no answer') }}"),
            ],
        },
    )
    product = ProductFactory(organization=organization, status="DRAFT")
    log = run(gql, editor, rule["id"], product)
    assert log["status"] == "SUCCEEDED"
    assert [entry["status"] for entry in log["actionLogs"]] == ["SKIPPED", "SUCCEEDED"]
    assert log["actionLogs"][0]["error"] == (
        'When not met: status EQUALS "ACTIVE" did not pass (actual: "DRAFT").'
    )
    product.refresh_from_db()
    assert product.description == "not called: no answer"


def test_when_in_a_batch_reads_the_results_of_its_own_run(organization):
    """Runs executed together in one transaction (runs/execute.py) evaluate each `when` at its
    turn against the results of their own run, as alone."""
    from tests.factories import AutomationRuleFactory

    rule = AutomationRuleFactory(
        organization=organization,
        manual_rule=True,
        actions=[
            {
                "action_type": "UPDATE_RECORD",
                "parameters": {"fields": {"stock": "{{ object.stock - 4 }}"}},
            },
            {
                "action_type": "UPDATE_RECORD",
                "parameters": {"fields": {"description": "low after {{ results.0.id }}"}},
                "when": when(leaf("results.0.record.stock", "LESS_THAN", 5)),
            },
        ],
    )
    products = [ProductFactory(organization=organization, stock=stock) for stock in (6, 9, 8)]
    logs = [
        AutomationLog.objects.create(
            organization=organization,
            rule=rule,
            trigger="MANUAL",
            content_type=rule.content_type,
            object_id=str(product.pk),
            context={"object": {"id": product.pk, "stock": product.stock}},
        )
        for product in products
    ]
    with CaptureQueriesContext(connection) as captured:
        execute.execute_runs([log.pk for log in logs])
    writes = [q["sql"] for q in captured.captured_queries if "automation_automationlog" in q["sql"]]
    assert writes[-1].startswith("3 times: UPDATE"), writes  # executed together
    for log, product in zip(logs, products, strict=True):
        log.refresh_from_db()
        product.refresh_from_db()
        low = product.stock < 5
        assert log.status == RunStatus.SUCCEEDED
        assert log.action_logs[1]["status"] == ("SUCCEEDED" if low else "SKIPPED")
        assert product.description == (f"low after {product.pk}" if low else "")
    assert [product.stock for product in products] == [2, 5, 4]


# --- Checked at save -------------------------------------------------------------------------------


REFUSED = [
    (
        [describe("x", when(leaf("stok", "LESS_THAN", 5)))],
        "actions.0.when.conditions.0.field",
        '"stok" is not a readable field of catalog.product.',
    ),
    (
        [describe("x"), describe("y", when(leaf("stock", "LESS_THAN", "five")))],
        "actions.1.when.conditions.0.value",
        "'five' cannot be compared with stock (IntegerField).",
    ),
    (
        [describe("x", when(leaf("results.0.id", "IS_NULL")))],
        "actions.0.when.conditions.0.field",
        '"results.0.id": the first action has no earlier action whose result it could test.',
    ),
    (
        [describe("x"), describe("y", when(leaf("results.1.id", "IS_NULL")))],
        "actions.1.when.conditions.0.field",
        '"results.1.id": a `when` tests the results of earlier actions (here results.0 to '
        "results.0).",
    ),
    (
        [describe("x"), describe("y", when(leaf("results.0.id", "CHANGED")))],
        "actions.1.when.conditions.0.operator",
        "CHANGED does not apply to an action's result: it has no previous version.",
    ),
    (
        [describe("x", when(leaf("status", "CHANGED_TO", "ACTIVE")))],
        "actions.0.when.conditions.0.operator",
        "CHANGED_TO applies to EVENT rules only.",
    ),
    (
        [describe("x", {"logic": "OR", "groups": [when(leaf("price", "LESS_THAN"))]})],
        "actions.0.when.groups.0.conditions.0.value",
        "LESS_THAN needs a value.",
    ),
]


@pytest.mark.parametrize(("actions", "path", "message"), REFUSED)
def test_a_when_no_run_could_evaluate_is_refused_at_save(
    gql, editor, organization, actions, path, message
):
    rule_input = {**if_else_rule(organization), "actions": actions}
    error = gql(CREATE, {"input": rule_input}, token=editor).error()
    assert error["extensions"]["code"] == "VALIDATION_ERROR"
    fields = error["extensions"]["fields"]
    assert list(fields) == [path], fields
    assert fields[path][0].startswith(message), fields[path]
    assert not AutomationRule.objects.exists() and not RuleAction.objects.exists()


def test_a_rules_own_conditions_cannot_test_results(gql, editor, organization):
    rule_input = {**if_else_rule(organization), "conditions": when(leaf("results.0.id", "IS_NULL"))}
    error = gql(CREATE, {"input": rule_input}, token=editor).error()
    assert error["extensions"]["fields"] == {
        "conditions.conditions.0.field": [
            "'results.N' is the result of an earlier action: only an action's `when` can test "
            "it (a rule's conditions are evaluated before any action)."
        ]
    }


def test_a_when_over_a_bound_is_refused_naming_it(gql, editor, organization, settings):
    settings.AUTOMATION_CONDITIONS_MAX_LEAVES = 2
    too_many = when(*[leaf("stock", "LESS_THAN", value) for value in (1, 2, 3)])
    rule_input = {**if_else_rule(organization), "actions": [describe("x", too_many)]}
    error = gql(CREATE, {"input": rule_input}, token=editor).error()
    assert error["extensions"]["fields"] == {
        "actions.0.when": [
            "A rule's conditions have at most 2 conditions in all "
            "(AUTOMATION_CONDITIONS_MAX_LEAVES)."
        ]
    }


def test_an_update_keeps_or_replaces_whens(gql, editor, organization):
    rule = create(gql, editor, if_else_rule(organization))
    kept = gql(UPDATE, {"id": rule["id"], "input": {"description": "d"}}, token=editor)
    assert kept.ok()["updateRule"]["actions"] == [
        {"order": 0, "when": rule["actions"][0]["when"]},
        {"order": 1, "when": rule["actions"][1]["when"]},
    ]
    replaced = gql(
        UPDATE, {"id": rule["id"], "input": {"actions": [describe("always")]}}, token=editor
    ).ok()["updateRule"]
    assert replaced["actions"] == [{"order": 0, "when": None}]
    # Kept whens are checked again against the changed rule: a category has no "stock".
    gql(
        UPDATE,
        {"id": rule["id"], "input": {"actions": if_else_rule(organization)["actions"]}},
        token=editor,
    ).ok()
    error = gql(UPDATE, {"id": rule["id"], "input": {"model": "catalog.category"}}, token=editor)
    fields = error.error()["extensions"]["fields"]
    assert "actions.0.when.conditions.0.field" in fields, fields
    assert "actions.1.when.conditions.0.field" in fields, fields
