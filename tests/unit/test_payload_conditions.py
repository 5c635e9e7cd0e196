"""Conditions on a WEBHOOK run's payload (automation/conditions/payload.py): paths, JSON
equality, orderings and text by JSON type, and the save-time check going through the same code."""

from types import SimpleNamespace

import pytest

from automation.conditions.payload import leaf_errors, payload_test, read
from automation.conditions.tree import ConditionError, OperatorError
from automation.core.choices import Operator

PAYLOAD = {
    "order": {"id": 7, "total": 120.5, "currency": "EUR", "paid": True, "note": None},
    "items": [{"sku": "CAN-1", "qty": 2}, {"sku": "HOSE-9", "qty": 1}],
    "customer-name": "Ada",
}
WEBHOOK_RULE = SimpleNamespace(trigger_type="WEBHOOK")
MANUAL_RULE = SimpleNamespace(trigger_type="MANUAL")


def passes(field, operator, expected) -> bool:
    return payload_test(Operator(operator), expected)(read(PAYLOAD, field))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("payload.order.id", 7),
        ("payload.items.1.sku", "HOSE-9"),
        ("payload.customer-name", "Ada"),
        ("payload.order.missing", None),
        ("payload.items.9.sku", None),  # past the end
        ("payload.order.total.cents", None),  # below a single value
        ("payload.order.note", None),
        ("payload.items.first", None),  # a list is entered by index only
    ],
)
def test_a_path_reads_the_value_or_null_where_the_payload_has_none(field, value):
    assert read(PAYLOAD, field) == value


@pytest.mark.parametrize(
    ("field", "operator", "expected", "result"),
    [
        ("payload.order.id", "EQUALS", 7, True),
        ("payload.order.id", "EQUALS", 7.0, True),  # numbers by value
        ("payload.order.id", "EQUALS", "7", False),  # text is not a number
        ("payload.order.paid", "EQUALS", 1, False),  # true is not 1
        ("payload.order.paid", "EQUALS", True, True),
        ("payload.order.note", "EQUALS", None, True),
        ("payload.order.missing", "NOT_EQUALS", "x", True),
        ("payload.items", "EQUALS", "CAN-1", False),  # a list equals no single value
        ("payload.order.currency", "IN", ["USD", "EUR", None], True),
        ("payload.order.currency", "NOT_IN", ["USD"], True),
        ("payload.order.missing", "NOT_IN", ["USD"], False),  # null fails NOT_IN, as for records
        ("payload.order.total", "GREATER_THAN", 100, True),
        ("payload.order.total", "LESS_THAN_OR_EQUAL", 120.5, True),
        ("payload.order.missing", "LESS_THAN", 100, False),
        ("payload.order.currency", "GREATER_THAN", "CHF", True),  # text by code point
        ("payload.items.0.sku", "STARTS_WITH", "CAN", True),
        ("payload.customer-name", "ICONTAINS", "AD", True),
        ("payload.items.1.sku", "REGEX", r"^HOSE-\d+$", True),
        ("payload.order.missing", "CONTAINS", "x", False),
        ("payload.order.missing", "IS_NULL", None, True),
        ("payload.order", "IS_NOT_NULL", None, True),
    ],
)
def test_operators_compare_json_values(field, operator, expected, result):
    assert passes(field, operator, expected) is result


@pytest.mark.parametrize(
    ("field", "operator", "expected", "message"),
    [
        ("payload.order.currency", "GREATER_THAN", 100, "cannot be compared with text"),
        ("payload.order.total", "STARTS_WITH", "1", "applies to text"),
        ("payload.order.id", "REGEX", "7", "applies to text"),
        ("payload.order.paid", "LESS_THAN", 2, "cannot be compared with true/false"),
    ],
)
def test_a_payload_value_of_another_type_is_an_error_not_a_false(
    field, operator, expected, message
):
    with pytest.raises(ConditionError, match=message):
        passes(field, operator, expected)


@pytest.mark.parametrize(
    ("operator", "expected", "error"),
    [
        ("CHANGED", None, OperatorError),
        ("CHANGED_TO", 1, OperatorError),
        ("EQUALS", {"id": 7}, ConditionError),
        ("IN", 7, ConditionError),
        ("IN", [[1]], ConditionError),
        ("GREATER_THAN", True, ConditionError),
        ("GREATER_THAN", None, ConditionError),
        ("CONTAINS", 5, ConditionError),
        ("REGEX", "(unclosed", ConditionError),
    ],
)
def test_the_rule_side_is_checked_before_any_payload(operator, expected, error):
    with pytest.raises(error):
        payload_test(Operator(operator), expected)


def test_the_save_time_check_names_the_part_at_fault():
    assert leaf_errors(WEBHOOK_RULE, "payload.order.total", Operator.GREATER_THAN, 100) == {}
    assert "field_name" in leaf_errors(WEBHOOK_RULE, "order.total", Operator.EQUALS, 1)
    assert "field_name" in leaf_errors(WEBHOOK_RULE, "payload.", Operator.EQUALS, 1)
    assert "field_name" in leaf_errors(WEBHOOK_RULE, "payload.a b", Operator.EQUALS, 1)
    assert "value" in leaf_errors(WEBHOOK_RULE, "payload.a", Operator.IS_NULL, 1)
    assert "value" in leaf_errors(WEBHOOK_RULE, "payload.a", Operator.EQUALS, [1])
    assert "operator" in leaf_errors(WEBHOOK_RULE, "payload.a", Operator.CHANGED, None)
    only_webhooks = leaf_errors(MANUAL_RULE, "payload.a", Operator.EQUALS, 1)
    assert only_webhooks == {
        "field_name": [
            "Only the runs of WEBHOOK rules have a payload; this rule's conditions test its "
            "model's fields."
        ]
    }
