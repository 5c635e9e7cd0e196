"""`previous`, the crossings and `valueField` over GraphQL: saved and read back, refused at their
input paths, and shown in a dry run's trace with both sides of the simulated write."""

import pytest

from automation.core.models import RuleCondition
from tests.api.test_rules import row_counts
from tests.factories import ProductFactory

pytestmark = pytest.mark.django_db

CREATE = """mutation($input: RuleInput!) {
  createRule(input: $input) {
    id conditions { conditions { field operator value previous valueField negate } }
  }
}"""
UPDATE = (
    "mutation($id: ID!, $input: RuleUpdateInput!) { updateRule(id: $id, input: $input) { id } }"
)
DRY_RUN = """mutation($id: ID!, $obj: ID, $changes: JSON) {
  runRule(id: $id, objectId: $obj, dryRun: true, changes: $changes) {
    status conditionsMet
    conditionTrace {
      path field operator expected actual passed error
      previous valueField actualPrevious expectedPrevious
    }
  }
}"""


def rule_input(organization, conditions, **overrides):
    return {
        "organization": str(organization.pk),
        "name": "Stock watch",
        "triggerType": "EVENT",
        "model": "catalog.product",
        "triggerEvent": "UPDATED",
        "conditions": {"conditions": conditions},
        **overrides,
    }


def test_previous_crossings_and_value_fields_are_saved_and_read_back(gql, editor, organization):
    conditions = [
        {"field": "stock", "operator": "CROSSED_BELOW", "value": 5},
        {"field": "stock", "operator": "GREATER_THAN_OR_EQUAL", "value": 5, "previous": True},
        {"field": "name", "operator": "CONTAINS", "valueField": "category__name"},
    ]
    created = gql(CREATE, {"input": rule_input(organization, conditions)}, token=editor).ok()
    leaves = created["createRule"]["conditions"]["conditions"]
    assert leaves == [
        {
            "field": "stock",
            "operator": "CROSSED_BELOW",
            "value": 5,
            "previous": False,
            "valueField": None,
            "negate": False,
        },
        {
            "field": "stock",
            "operator": "GREATER_THAN_OR_EQUAL",
            "value": 5,
            "previous": True,
            "valueField": None,
            "negate": False,
        },
        {
            "field": "name",
            "operator": "CONTAINS",
            "value": None,
            "previous": False,
            "valueField": "category__name",
            "negate": False,
        },
    ]
    stored = RuleCondition.objects.filter(rule_id=created["createRule"]["id"]).order_by("order")
    assert [(c.previous, c.value_field) for c in stored] == [
        (False, ""),
        (True, ""),
        (False, "category__name"),
    ]


def test_a_dry_run_with_simulated_changes_shows_both_sides_in_the_trace(gql, editor, organization):
    conditions = [
        {"field": "stock", "operator": "CROSSED_BELOW", "value": 5},
        {"field": "stock", "operator": "GREATER_THAN_OR_EQUAL", "value": 5, "previous": True},
        {"field": "stock", "operator": "LESS_THAN", "valueField": "price"},
    ]
    rule = gql(CREATE, {"input": rule_input(organization, conditions)}, token=editor).ok()
    product = ProductFactory(organization=organization, stock=10, price="12.50")
    variables = {
        "id": rule["createRule"]["id"],
        "obj": str(product.pk),
        "changes": {"stock": {"old": 10, "new": 3}},
    }
    log = gql(DRY_RUN, variables, token=editor).ok()["runRule"]
    assert (log["status"], log["conditionsMet"]) == ("SUCCEEDED", True)
    crossing, previous, against_price = log["conditionTrace"]
    assert crossing == {
        "path": "conditions.conditions.0",
        "field": "stock",
        "operator": "CROSSED_BELOW",
        "expected": 5,
        "actual": 3,
        "passed": True,
        "error": None,
        "previous": False,
        "valueField": None,
        "actualPrevious": 10,
        "expectedPrevious": None,
    }
    assert (previous["previous"], previous["actualPrevious"], previous["actual"]) == (True, 10, 3)
    assert (against_price["valueField"], against_price["expected"]) == ("price", "12.50")
    assert against_price["passed"] is True

    # Already below 5 before the write: neither the crossing nor "old >= 5" holds.
    variables["changes"] = {"stock": {"old": 3, "new": 2}}
    log = gql(DRY_RUN, variables, token=editor).ok()["runRule"]
    assert (log["status"], log["conditionsMet"]) == ("SKIPPED", False)
    assert [entry["passed"] for entry in log["conditionTrace"]] == [False, False, True]


def test_every_mistake_of_these_conditions_is_reported_at_its_input_path(gql, editor, organization):
    conditions = [
        {"field": "category__name", "operator": "EQUALS", "value": "x", "previous": True},
        {"field": "stock", "operator": "LESS_THAN", "value": 5, "valueField": "name"},
        {"field": "name", "operator": "CROSSED_BELOW", "value": "m"},
    ]
    before = row_counts()
    error = gql(
        CREATE,
        {"input": rule_input(organization, conditions, triggerEvent="CREATED")},
        token=editor,
    ).error()
    assert error["extensions"]["code"] == "VALIDATION_ERROR"
    assert error["extensions"]["fields"] == {
        "conditions.conditions.0.previous": [
            "previous reads the record as it was before the write, which only the runs of "
            "UPDATED rules have: on CREATED every field was null, and deletions, schedules, "
            "webhooks and runs by hand have no write before them.",
            "previous reads the record's own fields only: the values related records had before "
            "the write are not kept.",
        ],
        "conditions.conditions.1.value": ["Give a value or a valueField, not both."],
        "conditions.conditions.1.valueField": [
            'stock is a number and valueField "name" is text: a field compares with a field of '
            "the same kind (numbers with numbers, dates with dates, date-times with date-times, "
            "text with text, true/false with true/false, a foreign key with a foreign key to the "
            "same model or that model's id)."
        ],
        "conditions.conditions.2.operator": [
            "CROSSED_BELOW compares a field's value before the write with its value after it, "
            "which only the runs of UPDATED rules have. On CREATED every field was null before, "
            "so nothing crosses: use LESS_THAN or GREATER_THAN.",
            "CROSSED_BELOW applies to numbers, dates and date-times; name is CharField.",
        ],
    }
    assert row_counts() == before


def test_kept_previous_conditions_are_checked_against_a_changed_trigger_event(
    gql, editor, organization
):
    conditions = [{"field": "stock", "operator": "LESS_THAN", "value": 5, "previous": True}]
    rule = gql(CREATE, {"input": rule_input(organization, conditions)}, token=editor).ok()
    error = gql(
        UPDATE,
        {"id": rule["createRule"]["id"], "input": {"triggerEvent": "DELETED"}},
        token=editor,
    ).error()
    assert list(error["extensions"]["fields"]) == ["conditions.conditions.0.previous"]
    # An update that leaves the conditions alone keeps previous and valueField.
    gql(UPDATE, {"id": rule["createRule"]["id"], "input": {"name": "Renamed"}}, token=editor).ok()
    (leaf,) = RuleCondition.objects.filter(rule_id=rule["createRule"]["id"])
    assert leaf.previous is True
