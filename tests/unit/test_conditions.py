"""The condition evaluator on the record's own fields: operators, coercion, groups, trace, failure.

Relation paths (database reads, organization scoping) are in
tests/integration/test_condition_relations.py.
"""

import datetime
import decimal
import json
from unittest import mock

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.db import models
from django.test import override_settings
from django.utils import timezone

from automation.conditions.checks import leaf_errors
from automation.conditions.coercion import coerce_value
from automation.conditions.evaluate import evaluate_conditions
from automation.conditions.operators import leaf_test, resolved_relative
from automation.conditions.tree import Clock, ConditionError, OperatorError, load_condition_tree
from automation.core.choices import ConditionLogic, Operator, TriggerEvent
from automation.core.context import RunContext
from automation.core.models import ConditionGroup, RuleCondition
from automation.core.registry import ResolvedPath
from automation.core.snapshots import snapshot
from catalog.choices import ProductStatus
from catalog.models import Product
from tests.factories import (
    AutomationRuleFactory,
    CategoryFactory,
    ConditionGroupFactory,
    ProductFactory,
    RuleConditionFactory,
)

pytestmark = pytest.mark.django_db

TRACE_KEYS = {"path", "field", "operator", "expected", "actual", "passed", "error"}


@pytest.fixture
def product(organization):
    return ProductFactory(
        organization=organization,
        category=CategoryFactory(organization=organization, name="Tools"),
        name="Blue Widget",
        description="",
        status=ProductStatus.ACTIVE,
        price=decimal.Decimal("19.99"),
        stock=7,
    )


def context_for(rule, record, event=TriggerEvent.UPDATED, changes=None, **overrides):
    ctx = RunContext(
        organization_id=rule.organization_id,
        rule_id=rule.pk,
        rule_name=rule.name,
        trigger=rule.trigger_type,
        event=event,
        model=rule.model,
        object_id=str(record.pk),
        object=snapshot(record),
        changes=changes,
    )
    for name, value in overrides.items():
        setattr(ctx, name, value)
    return ctx


def check_leaf(record, field_name, operator, value=None, negate=False, **ctx_options):
    """Evaluate a rule with one leaf against `record`: (result, the leaf's trace entry)."""
    rule = AutomationRuleFactory(
        organization=record.organization,
        conditions=[dict(field_name=field_name, operator=operator, value=value, negate=negate)],
    )
    result = evaluate_conditions(rule, context_for(rule, record, **ctx_options))
    assert len(result.trace) == 1
    return result, result.trace[0]


def test_evaluating_a_leaf_does_not_list_the_operators_again(product):
    """`Operator.values` builds the list of every operator on each use: a run's evaluation
    checked each leaf's operator against it (a sixth of a leaf's CPU). Counted: the builds."""
    built = []
    choices = vars(type(Operator))["choices"]  # a property of Django's ChoicesType

    def counting(cls):
        built.append(cls)
        return choices.fget(cls)

    with mock.patch.object(type(Operator), "choices", property(counting)):
        result, entry = check_leaf(product, "stock", Operator.EQUALS, 7)
    assert entry["passed"] is True and result.met is True
    assert Operator not in built


# --- Operators: matching, non-matching, wrong type ---------------------------------------------

# (field, operator, value, passed) on the product fixture; value types vary to exercise coercion.
MATCHING_CASES = [
    ("stock", Operator.EQUALS, 7, True),
    ("stock", Operator.EQUALS, "7", True),
    ("stock", Operator.EQUALS, 7.0, True),
    ("stock", Operator.EQUALS, 8, False),
    ("price", Operator.EQUALS, "19.99", True),
    ("price", Operator.EQUALS, 19.99, True),
    ("price", Operator.EQUALS, "19.990", True),
    ("price", Operator.EQUALS, "20", False),
    ("status", Operator.EQUALS, "ACTIVE", True),
    ("status", Operator.EQUALS, "DRAFT", False),
    ("name", Operator.EQUALS, "Blue Widget", True),
    ("name", Operator.EQUALS, "blue widget", False),
    ("stock", Operator.NOT_EQUALS, 8, True),
    ("stock", Operator.NOT_EQUALS, "7", False),
    ("status", Operator.NOT_EQUALS, "DRAFT", True),
    ("price", Operator.GREATER_THAN, "10", True),
    ("price", Operator.GREATER_THAN, 19.99, False),
    ("price", Operator.GREATER_THAN_OR_EQUAL, "19.99", True),
    ("price", Operator.GREATER_THAN_OR_EQUAL, "20.00", False),
    ("stock", Operator.LESS_THAN, 8, True),
    ("stock", Operator.LESS_THAN, 7, False),
    ("stock", Operator.LESS_THAN_OR_EQUAL, "7", True),
    ("stock", Operator.LESS_THAN_OR_EQUAL, 6, False),
    ("name", Operator.GREATER_THAN, "Apple", True),
    ("name", Operator.CONTAINS, "Widget", True),
    ("name", Operator.CONTAINS, "widget", False),
    ("name", Operator.NOT_CONTAINS, "Gadget", True),
    ("name", Operator.NOT_CONTAINS, "Blue", False),
    ("name", Operator.ICONTAINS, "wIdGeT", True),
    ("name", Operator.ICONTAINS, "gadget", False),
    ("name", Operator.STARTS_WITH, "Blue", True),
    ("name", Operator.STARTS_WITH, "Widget", False),
    ("name", Operator.ENDS_WITH, "Widget", True),
    ("name", Operator.ENDS_WITH, "Blue", False),
    ("name", Operator.REGEX, r"^Blue\s+W", True),
    ("name", Operator.REGEX, r"Wid", True),  # a search: anchors are the rule's to add
    ("name", Operator.REGEX, r"^Widget", False),
    ("status", Operator.IN, ["DRAFT", "ACTIVE"], True),
    ("status", Operator.IN, ["DRAFT"], False),
    ("stock", Operator.IN, ["7", 8], True),
    ("stock", Operator.IN, [], False),
    ("status", Operator.NOT_IN, ["DRAFT"], True),
    ("status", Operator.NOT_IN, ["DRAFT", "ACTIVE"], False),
    ("category", Operator.IS_NULL, None, False),
    ("category", Operator.IS_NOT_NULL, None, True),
    ("description", Operator.IS_NULL, None, False),  # an empty text is not null
]


@pytest.mark.parametrize(("field_name", "operator", "value", "passed"), MATCHING_CASES)
def test_operator_verdict(product, field_name, operator, value, passed):
    result, entry = check_leaf(product, field_name, operator, value)
    assert entry["error"] is None
    assert entry["passed"] is passed
    assert result.met is passed


@pytest.mark.parametrize(("field_name", "operator", "value", "passed"), MATCHING_CASES)
def test_leaf_negate_inverts_the_verdict(product, field_name, operator, value, passed):
    result, entry = check_leaf(product, field_name, operator, value, negate=True)
    assert entry["error"] is None
    assert entry["passed"] is not passed
    assert result.met is not passed


def test_foreign_key_compares_as_the_related_id(product):
    category_id = product.category_id
    assert check_leaf(product, "category", Operator.EQUALS, str(category_id))[1]["passed"]
    assert check_leaf(product, "category", Operator.IN, [category_id])[1]["passed"]
    assert not check_leaf(product, "category", Operator.EQUALS, category_id + 1)[1]["passed"]


def test_datetimes_compare_in_utc_with_naive_values_as_utc(product):
    created = product.created_at.astimezone(datetime.UTC)
    before = (created - datetime.timedelta(hours=1)).replace(tzinfo=None).isoformat()
    assert check_leaf(product, "created_at", Operator.GREATER_THAN, before)[1]["passed"]
    # The same instant written in another offset is equal.
    paris = created.astimezone(datetime.timezone(datetime.timedelta(hours=2))).isoformat()
    assert check_leaf(product, "created_at", Operator.EQUALS, paris)[1]["passed"]
    later = (created + datetime.timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    assert check_leaf(product, "created_at", Operator.LESS_THAN, later)[1]["passed"]


# (field, operator, value, a fragment of the error)
WRONG_TYPE_CASES = [
    ("stock", Operator.EQUALS, "seven", "cannot be compared"),
    ("stock", Operator.EQUALS, True, "cannot be compared"),
    ("stock", Operator.EQUALS, 7.5, "cannot be compared"),
    ("stock", Operator.NOT_EQUALS, [7], "cannot be compared"),
    ("price", Operator.GREATER_THAN, "cheap", "cannot be compared"),
    ("price", Operator.LESS_THAN, "NaN", "cannot be compared"),
    ("price", Operator.LESS_THAN_OR_EQUAL, {"a": 1}, "cannot be compared"),
    ("stock", Operator.GREATER_THAN_OR_EQUAL, None, "needs a value"),
    ("created_at", Operator.GREATER_THAN, "yesterday", "cannot be compared"),
    ("status", Operator.EQUALS, "NOPE", "is not a choice"),
    ("status", Operator.IN, ["ACTIVE", "NOPE"], "is not a choice"),
    ("status", Operator.NOT_IN, "ACTIVE", "needs a list"),
    ("status", Operator.IN, "ACTIVE", "needs a list"),
    ("name", Operator.EQUALS, 5, "cannot be compared"),
    ("name", Operator.CONTAINS, 5, "needs a text value"),
    ("name", Operator.NOT_CONTAINS, None, "needs a value"),
    ("stock", Operator.CONTAINS, "7", "applies to text fields"),
    ("price", Operator.ICONTAINS, "9", "applies to text fields"),
    ("stock", Operator.STARTS_WITH, "7", "applies to text fields"),
    ("name", Operator.ENDS_WITH, ["Widget"], "needs a text value"),
    ("name", Operator.REGEX, "(unclosed", "Invalid regular expression"),
    ("name", Operator.REGEX, "a" * 501, "longer than 500"),
    ("stock", Operator.REGEX, "7", "applies to text fields"),
    ("status", Operator.CHANGED_TO, "NOPE", "is not a choice"),
    ("stock", Operator.CHANGED_FROM, "x", "cannot be compared"),
    ("stock", "SOUNDS_LIKE", 7, "Unknown operator"),
]


@pytest.mark.parametrize(("field_name", "operator", "value", "message"), WRONG_TYPE_CASES)
def test_values_that_do_not_compare_are_an_error_of_the_leaf(
    product, field_name, operator, value, message
):
    # Negated, so a silent false would have read as passed: an error must not.
    result, entry = check_leaf(product, field_name, operator, value, negate=True)
    assert message in entry["error"]
    assert entry["passed"] is False
    assert result.met is False


def test_a_snapshot_value_of_the_wrong_type_is_an_error(product, organization):
    rule = AutomationRuleFactory(
        organization=organization,
        conditions=[dict(field_name="stock", operator=Operator.GREATER_THAN, value=1)],
    )
    ctx = context_for(rule, product)
    ctx.object["stock"] = "plenty"
    result = evaluate_conditions(rule, ctx)
    assert result.met is False
    assert "'plenty' cannot be compared with stock" in result.trace[0]["error"]


# --- None ----------------------------------------------------------------------------------------

# With a null actual: only IS_NULL, EQUALS null and NOT_EQUALS a value are true.
NONE_ACTUAL_CASES = [
    ("stock", Operator.EQUALS, 7, False),
    ("stock", Operator.EQUALS, None, True),
    ("stock", Operator.NOT_EQUALS, 7, True),
    ("stock", Operator.NOT_EQUALS, None, False),
    ("stock", Operator.GREATER_THAN, 0, False),
    ("stock", Operator.GREATER_THAN_OR_EQUAL, 0, False),
    ("stock", Operator.LESS_THAN, 100, False),
    ("stock", Operator.LESS_THAN_OR_EQUAL, 100, False),
    ("stock", Operator.IN, [7, None], False),
    ("stock", Operator.NOT_IN, [7], False),
    ("stock", Operator.IS_NULL, None, True),
    ("stock", Operator.IS_NOT_NULL, None, False),
    ("name", Operator.CONTAINS, "a", False),
    ("name", Operator.NOT_CONTAINS, "a", False),
    ("name", Operator.ICONTAINS, "a", False),
    ("name", Operator.STARTS_WITH, "a", False),
    ("name", Operator.ENDS_WITH, "a", False),
    ("name", Operator.REGEX, ".*", False),
]


@pytest.mark.parametrize(("field_name", "operator", "value", "passed"), NONE_ACTUAL_CASES)
def test_null_actual_compares_true_only_with_null_tests(
    product, organization, field_name, operator, value, passed
):
    rule = AutomationRuleFactory(
        organization=organization,
        conditions=[dict(field_name=field_name, operator=operator, value=value)],
    )
    ctx = context_for(rule, product)
    ctx.object[field_name] = None
    result = evaluate_conditions(rule, ctx)
    entry = result.trace[0]
    assert entry["error"] is None
    assert entry["actual"] is None
    assert entry["passed"] is passed
    assert result.met is passed


def test_null_foreign_key_is_null(organization):
    product = ProductFactory(organization=organization, category=None)
    assert check_leaf(product, "category", Operator.IS_NULL)[1]["passed"] is True
    assert check_leaf(product, "category", Operator.EQUALS, None)[1]["passed"] is True
    assert check_leaf(product, "category", Operator.EQUALS, 1)[1]["passed"] is False
    assert check_leaf(product, "category", Operator.NOT_EQUALS, 1)[1]["passed"] is True


# --- CHANGED, CHANGED_FROM, CHANGED_TO --------------------------------------------------------

STATUS_AND_PRICE_CHANGED = {
    "status": {"old": "DRAFT", "new": "ACTIVE"},
    "price": {"old": "10.00", "new": "19.99"},
}

CHANGE_CASES = [
    ("status", Operator.CHANGED, None, True),
    ("stock", Operator.CHANGED, None, False),
    ("status", Operator.CHANGED_FROM, "DRAFT", True),
    ("status", Operator.CHANGED_FROM, "ACTIVE", False),
    ("status", Operator.CHANGED_TO, "ACTIVE", True),
    ("status", Operator.CHANGED_TO, "DRAFT", False),
    ("price", Operator.CHANGED_FROM, 10, True),  # coerced: "10.00" == 10
    ("price", Operator.CHANGED_TO, "19.990", True),
    ("stock", Operator.CHANGED_TO, 7, False),  # unchanged, even though it is 7
]


@pytest.mark.parametrize(("field_name", "operator", "value", "passed"), CHANGE_CASES)
def test_change_operators_read_the_runs_changes(product, field_name, operator, value, passed):
    result, entry = check_leaf(
        product, field_name, operator, value, changes=STATUS_AND_PRICE_CHANGED
    )
    assert entry["error"] is None
    assert entry["passed"] is passed
    assert entry["actual"] == STATUS_AND_PRICE_CHANGED.get(field_name)


def test_on_created_every_set_field_changed_from_null(organization):
    product = ProductFactory(organization=organization, category=None, name="New")
    created = {"event": TriggerEvent.CREATED, "changes": None}
    assert check_leaf(product, "name", Operator.CHANGED, **created)[1]["passed"] is True
    assert check_leaf(product, "name", Operator.CHANGED_FROM, None, **created)[1]["passed"]
    assert check_leaf(product, "name", Operator.CHANGED_TO, "New", **created)[1]["passed"]
    # A field left null was not set, so it did not change.
    assert check_leaf(product, "category", Operator.CHANGED, **created)[1]["passed"] is False


def test_change_operators_without_changes_are_false(product):
    # A manual run of an event rule has no changes: nothing changed.
    result, entry = check_leaf(product, "status", Operator.CHANGED, changes=None)
    assert (entry["passed"], entry["error"], result.met) == (False, None, False)


def test_change_operator_on_a_relation_path_is_an_error(product):
    result, entry = check_leaf(product, "category__name", Operator.CHANGED, negate=True)
    assert "own fields only" in entry["error"]
    assert result.met is False


# --- Coercion of other field types ---------------------------------------------------------


def named(model_field, name="value"):
    model_field.set_attributes_from_name(name)
    return model_field


@pytest.mark.parametrize(
    ("model_field", "value", "coerced"),
    [
        (named(models.BooleanField()), True, True),
        (named(models.BooleanField()), "false", False),
        (named(models.FloatField()), "1.5", 1.5),
        (named(models.FloatField()), 2, 2.0),
        (named(models.DateField()), "2024-02-29", datetime.date(2024, 2, 29)),
        (
            named(models.DateTimeField()),
            "2024-02-29T10:00:00",
            datetime.datetime(2024, 2, 29, 10, tzinfo=datetime.UTC),
        ),
        (named(models.DecimalField()), 0.1, decimal.Decimal("0.1")),
        (named(models.BigIntegerField()), "12", 12),
    ],
)
def test_coerce_value_to_the_field_type(model_field, value, coerced):
    assert coerce_value(model_field, value) == coerced


@pytest.mark.parametrize(
    ("model_field", "value"),
    [
        (named(models.BooleanField()), 1),
        (named(models.BooleanField()), "yes"),
        (named(models.FloatField()), "inf"),
        (named(models.FloatField()), False),
        (named(models.DateField()), "2024-02-30"),
        (named(models.DateField()), "2024-02-29T10:00:00"),
        (named(models.DecimalField()), "Infinity"),
        (named(models.IntegerField()), "1e3"),
    ],
)
def test_coerce_value_refuses_other_types(model_field, value):
    with pytest.raises(ConditionError):
        coerce_value(model_field, value)


# --- Groups ------------------------------------------------------------------------------------


def build_nested_rule(organization):
    """root AND
    [0] status EQUALS ACTIVE
    groups.0  NOT (OR)                      (order 0, created second)
        [0] stock GREATER_THAN 100
        groups.0  AND
            [0] NOT name STARTS_WITH "Red"
            [1] price LESS_THAN 5
    groups.1  AND                           (order 1, created first)
        [0] category IS_NOT_NULL
    """
    rule = AutomationRuleFactory(
        organization=organization,
        conditions=[dict(field_name="status", operator=Operator.EQUALS, value="ACTIVE")],
    )
    second = ConditionGroupFactory(rule=rule, order=1)
    RuleConditionFactory(
        rule=rule, group=second, field_name="category", operator=Operator.IS_NOT_NULL, value=None
    )
    first = ConditionGroupFactory(rule=rule, order=0, logic=ConditionLogic.OR, negate=True)
    RuleConditionFactory(
        rule=rule, group=first, field_name="stock", operator=Operator.GREATER_THAN, value=100
    )
    inner = ConditionGroupFactory(rule=rule, parent=first)
    # Leaves created out of order: the path index follows `order`.
    RuleConditionFactory(
        rule=rule, group=inner, order=1, field_name="price", operator=Operator.LESS_THAN, value=5
    )
    RuleConditionFactory(
        rule=rule,
        group=inner,
        order=0,
        field_name="name",
        operator=Operator.STARTS_WITH,
        value="Red",
        negate=True,
    )
    return rule


def test_nested_groups_with_negation_and_trace_paths(product, organization):
    rule = build_nested_rule(organization)
    result = evaluate_conditions(rule, context_for(rule, product))

    # stock 7 > 100 no; NOT "Blue Widget" starts with Red yes; 19.99 < 5 no -> inner AND false;
    # OR false, negated -> true. category set -> true. status ACTIVE -> true. Root: true.
    assert result.met is True
    by_path = {entry["path"]: entry for entry in result.trace}
    assert [entry["path"] for entry in result.trace] == [
        "conditions.conditions.0",
        "conditions.groups.0.conditions.0",
        "conditions.groups.0.groups.0.conditions.0",
        "conditions.groups.0.groups.0.conditions.1",
        "conditions.groups.1.conditions.0",
    ]
    assert by_path["conditions.groups.0.groups.0.conditions.0"] == {
        "path": "conditions.groups.0.groups.0.conditions.0",
        "field": "name",
        "operator": "STARTS_WITH",
        "expected": "Red",
        "actual": "Blue Widget",
        "passed": True,  # after the leaf's own negate
        "error": None,
    }
    assert by_path["conditions.groups.0.groups.0.conditions.1"]["actual"] == "19.99"
    assert by_path["conditions.groups.0.groups.0.conditions.1"]["passed"] is False
    assert by_path["conditions.groups.1.conditions.0"]["passed"] is True

    # Make the inner AND true: the negated OR group becomes false, and so does the rule.
    product.price = decimal.Decimal("4.00")
    result = evaluate_conditions(rule, context_for(rule, product))
    assert result.met is False
    assert all(entry["error"] is None for entry in result.trace)
    assert len(result.trace) == 5  # no short-circuit: every leaf is in the trace


def test_or_root_is_met_by_any_leaf(product, organization):
    rule = AutomationRuleFactory(
        organization=organization,
        root_logic=ConditionLogic.OR,
        conditions=[
            dict(field_name="stock", operator=Operator.EQUALS, value=1),
            dict(field_name="stock", operator=Operator.EQUALS, value=7),
        ],
    )
    assert evaluate_conditions(rule, context_for(rule, product)).met is True
    product.stock = 2
    assert evaluate_conditions(rule, context_for(rule, product)).met is False


def test_empty_groups_and_missing_root_are_met(product, organization):
    rule = AutomationRuleFactory(organization=organization, root_logic=ConditionLogic.OR)
    result = evaluate_conditions(rule, context_for(rule, product))
    assert (result.met, result.trace) == (True, [])

    ConditionGroupFactory(rule=rule, negate=True)  # NOT (nothing) is false
    assert evaluate_conditions(rule, context_for(rule, product)).met is False

    ConditionGroup.objects.filter(rule=rule).delete()
    result = evaluate_conditions(rule, context_for(rule, product))
    assert (result.met, result.trace) == (True, [])


def test_tree_loads_in_two_queries_and_is_reusable(
    product, organization, django_assert_num_queries
):
    rule = build_nested_rule(organization)
    with django_assert_num_queries(2):
        tree = load_condition_tree(rule)
    assert [leaf.path for leaf in tree.leaves()][-1] == "conditions.groups.1.conditions.0"
    ctx = context_for(rule, product)
    evaluate_conditions(rule, ctx, tree=tree)  # warms the ContentType cache
    # Local fields only: a given tree is evaluated from the snapshot without a query.
    with django_assert_num_queries(0):
        assert evaluate_conditions(rule, ctx, tree=tree).met is True


# --- Failing closed ----------------------------------------------------------------------------


def test_an_error_under_a_negated_group_fails_the_whole_rule(product, organization):
    rule = AutomationRuleFactory(
        organization=organization,
        conditions=[dict(field_name="status", operator=Operator.EQUALS, value="ACTIVE")],
    )
    group = ConditionGroupFactory(rule=rule, negate=True)
    # Evaluated as false, NOT turns it true: the error must still win.
    RuleConditionFactory(
        rule=rule, group=group, field_name="stock", operator=Operator.GREATER_THAN, value="lots"
    )
    result = evaluate_conditions(rule, context_for(rule, product))
    assert result.met is False
    failing = result.trace[1]
    assert failing["path"] == "conditions.groups.0.conditions.0"
    assert failing["passed"] is False
    assert "cannot be compared" in failing["error"]
    assert result.trace[0]["passed"] is True  # the other leaves were still evaluated


def test_a_path_that_no_longer_resolves_is_an_error(product, organization, settings, caplog):
    rule = AutomationRuleFactory(
        organization=organization,
        conditions=[dict(field_name="stock", operator=Operator.EQUALS, value=7, negate=True)],
    )
    readable_without_stock = {
        **settings.AUTOMATION_MODELS,
        "catalog.product": {"fields": ["id", "name", "status"], "writable": []},
    }
    with (
        override_settings(AUTOMATION_MODELS=readable_without_stock),
        caplog.at_level("WARNING", logger="automation.conditions.evaluate"),
    ):
        result = evaluate_conditions(rule, context_for(rule, product))
    assert result.met is False
    assert "no longer resolves" in result.trace[0]["error"]
    assert "conditions.conditions.0" in caplog.text


def test_a_rule_without_a_model_cannot_test_fields(product, organization):
    rule = AutomationRuleFactory(
        organization=organization,
        conditions=[dict(field_name="stock", operator=Operator.IS_NULL, negate=True)],
    )
    ctx = context_for(rule, product)
    rule.content_type = None
    result = evaluate_conditions(rule, ctx)
    assert result.met is False
    assert "no model" in result.trace[0]["error"]


def test_a_run_without_a_record_cannot_read_fields(organization):
    rule = AutomationRuleFactory(
        organization=organization,
        conditions=[dict(field_name="stock", operator=Operator.IS_NULL, negate=True)],
    )
    ctx = RunContext(
        organization_id=organization.pk, rule_id=rule.pk, rule_name=rule.name, trigger="MANUAL"
    )
    result = evaluate_conditions(rule, ctx)
    assert result.met is False
    assert "no record" in result.trace[0]["error"]


def test_never_raises_on_a_broken_context(organization):
    rule = AutomationRuleFactory(
        organization=organization,
        conditions=[dict(field_name="stock", operator=Operator.IS_NULL)],
    )
    result = evaluate_conditions(rule, None)
    assert result.met is False
    assert result.trace == [], "every trace entry is a leaf with a real operator"
    assert result.error.startswith("Internal error")


def test_a_catastrophic_backtracking_regex_is_evaluated_quickly(organization):
    """RE2 does not backtrack: (a+)+$ against "aaa...b" is a plain miss, not a timeout."""
    product = ProductFactory(organization=organization, description="a" * 100_000 + "b")
    result, entry = check_leaf(product, "description", Operator.REGEX, r"(a+)+$")
    # Matched to the end within AUTOMATION_REGEX_MAX_STEPS, which a backtracking engine's
    # exponential work would not fit (nor its time the evaluation's budget).
    assert entry["error"] is None
    assert entry["passed"] is False
    product.description = "a" * 100_000
    result, entry = check_leaf(product, "description", Operator.REGEX, r"(a+)+$")
    assert entry["passed"] is True


@override_settings(AUTOMATION_REGEX_MAX_STEPS=1_000_000)
def test_a_regex_match_over_the_step_bound_is_an_error_of_the_leaf(organization):
    """Linear is not free: (program size x text length) over the bound is refused, not run."""
    product = ProductFactory(organization=organization, description="ab " * 10_000)
    result, entry = check_leaf(
        product, "description", Operator.REGEX, r"(?:[a-z]+ ?){1000}", negate=True
    )
    assert "too long for this regular expression" in entry["error"]
    assert "AUTOMATION_REGEX_MAX_STEPS" in entry["error"]
    assert entry["passed"] is False
    assert result.met is False
    # The same pattern on a short text is matched.
    product.description = "ab " * 10
    result, entry = check_leaf(product, "description", Operator.REGEX, r"(?:[a-z]+ ?){10}")
    assert entry["error"] is None and entry["passed"] is True


# --- Trace -------------------------------------------------------------------------------------


def test_trace_entries_are_json_with_the_contract_keys(product, organization):
    rule = AutomationRuleFactory(
        organization=organization,
        conditions=[
            dict(field_name="price", operator=Operator.GREATER_THAN, value=5),
            dict(field_name="created_at", operator=Operator.IS_NOT_NULL),
            dict(field_name="category__name", operator=Operator.EQUALS, value="Tools"),
        ],
    )
    result = evaluate_conditions(rule, context_for(rule, product))
    assert result.met is True
    assert all(set(entry) == TRACE_KEYS for entry in result.trace)
    assert json.loads(json.dumps(result.trace)) == result.trace
    assert result.trace[0]["actual"] == "19.99"
    assert result.trace[0]["expected"] == 5
    assert result.trace[1]["actual"] == product.created_at.isoformat()
    assert result.trace[2]["actual"] == "Tools"


def test_trace_entries_are_bounded_whatever_the_values(product, organization):
    """Long texts and lists are cut, saying how long they were: a trace stays small."""
    product.description = "y" * 100_000
    product.save()
    rule = AutomationRuleFactory(
        organization=organization,
        conditions=[
            dict(field_name="description", operator=Operator.CONTAINS, value="x" * 100_000),
            dict(field_name="name", operator=Operator.IN, value=[f"n{i}" for i in range(1000)]),
            dict(field_name="stock", operator=Operator.EQUALS, value="z" * 100_000),
        ],
    )
    result = evaluate_conditions(rule, context_for(rule, product))
    text, listed, uncoercible = result.trace
    assert text["expected"] == "x" * 200 + "... (100000 characters)"
    assert text["actual"] == "y" * 200 + "... (100000 characters)"
    assert listed["expected"][:20] == [f"n{i}" for i in range(20)]
    assert listed["expected"][20:] == ["... 980 more (1000 in all)"]
    assert uncoercible["error"].endswith("characters)")
    assert len(uncoercible["error"]) < 1100
    assert len(json.dumps(result.trace)) < 5_000


def test_leaves_left_when_the_budget_is_spent_fail_closed(product, organization, monkeypatch):
    """A slow first leaf spends the budget: the others are not evaluated and fail closed, even
    under a negation, and the result says how many were left."""
    from automation.conditions import comparisons, evaluate

    clock = [1000.0]
    monkeypatch.setattr(evaluate.time, "monotonic", lambda: clock[0])
    real_compile = comparisons.compile_regex

    def slow_compile(pattern):
        clock[0] += 10  # this leaf took 10 s
        return real_compile(pattern)

    monkeypatch.setattr(comparisons, "compile_regex", slow_compile)
    rule = AutomationRuleFactory(
        organization=organization,
        conditions=[
            dict(field_name="name", operator=Operator.REGEX, value="Widget"),
            dict(field_name="stock", operator=Operator.EQUALS, value=7, negate=True),
            dict(field_name="stock", operator=Operator.EQUALS, value=8, negate=True),
        ],
    )
    ConditionGroup.objects.filter(pk=rule.root_group.pk).update(logic=ConditionLogic.OR)
    result = evaluate_conditions(rule, context_for(rule, product), budget=2)
    first, *rest = result.trace
    assert (first["passed"], first["error"]) == (True, None)
    for entry in rest:
        assert entry["passed"] is False
        assert "time budget of 2 s" in entry["error"]
        assert "AUTOMATION_CONDITIONS_BUDGET_SECONDS" in entry["error"]
    assert result.met is False, "an OR with a passing leaf still fails closed"
    assert result.budget_error == (
        "Conditions not evaluated in time: the budget of 2 s (AUTOMATION_CONDITIONS_BUDGET_SECONDS)"
        " was spent with 2 of 3 conditions left, which count as failed."
    )


def test_leaves_are_read_from_the_rule_as_stored(product, organization):
    rule = AutomationRuleFactory(organization=organization)
    RuleCondition.objects.create(
        rule=rule, group=rule.root_group, field_name="name", operator="EQUALS", value="x"
    )
    result = evaluate_conditions(rule, context_for(rule, product))
    assert result.trace[0]["field"] == "name"
    assert result.met is False


# --- One checker: the same messages when a rule is saved and when it runs -------------------------

# (field, operator, value, where the save-time check reports it): the list of values that
# used to be accepted and only failed at run time.
REFUSED_LEAVES = [
    ("stock", Operator.LESS_THAN, "five", "value"),
    ("status", Operator.EQUALS, "SOLD_OUT", "value"),
    ("stock", Operator.CONTAINS, 5, "operator"),
    ("stock", Operator.LESS_THAN, None, "value"),
    ("created_at", Operator.GREATER_THAN, "yesterday", "value"),
    ("created_at", Operator.GREATER_THAN, "-P7X", "value"),
    ("price", Operator.CHANGED_TO, "cheap", "value"),
    ("category__name", Operator.STARTS_WITH, 5, "value"),
    ("category__products__stock", Operator.GREATER_THAN, "many", "value"),
    ("category__name", Operator.CHANGED, None, "operator"),
]


@pytest.mark.parametrize(("field_name", "operator", "value", "where"), REFUSED_LEAVES)
def test_save_time_and_run_time_report_a_leaf_with_the_same_message(
    product, organization, field_name, operator, value, where
):
    rule = AutomationRuleFactory(
        organization=organization,
        conditions=[dict(field_name=field_name, operator=operator, value=value)],
    )
    saved = leaf_errors(rule, field_name, operator, value)
    assert list(saved) == [where]
    (message,) = saved[where]
    result = evaluate_conditions(rule, context_for(rule, product))
    assert result.trace[0]["error"] == message
    assert result.met is False


def test_save_time_and_run_time_call_the_same_checker(product, organization, monkeypatch):
    """Not two copies that agree today: both go through operators.leaf_test."""
    from automation.conditions import operators
    from automation.rules.condition_trees import check_condition

    calls = []
    real_leaf_test = operators.leaf_test

    def spy(operator, path, expected, clock):
        calls.append((operator, path.path, expected))
        return real_leaf_test(operator, path, expected, clock)

    monkeypatch.setattr(operators, "leaf_test", spy)
    rule = AutomationRuleFactory(
        organization=organization,
        conditions=[dict(field_name="stock", operator=Operator.LESS_THAN, value="five")],
    )
    leaf = RuleCondition.objects.get(rule=rule)
    with pytest.raises(ValidationError):
        check_condition(leaf)  # what services.create_rule / update_rule and the admin call
    evaluate_conditions(rule, context_for(rule, product))
    assert calls == [(Operator.LESS_THAN, "stock", "five")] * 2


def test_an_operator_that_does_not_apply_is_an_operator_error():
    path = ResolvedPath("flag", (), named(models.BooleanField(), "flag"), False)
    with pytest.raises(OperatorError, match="does not apply to a true/false field"):
        leaf_test(Operator.LESS_THAN, path, True, Clock(now=timezone.now()))


@pytest.mark.parametrize(
    ("field_name", "operator", "value"),
    [
        ("stock", Operator.LESS_THAN, "5"),
        ("stock", Operator.IN, ["5", 6]),
        ("status", Operator.EQUALS, "ACTIVE"),
        ("price", Operator.GREATER_THAN, "9.99"),
        ("price", Operator.GREATER_THAN, 9.99),
        ("created_at", Operator.LESS_THAN, "2026-01-31T09:00:00Z"),
        ("created_at", Operator.LESS_THAN, "-P7D"),
        ("created_at", Operator.GREATER_THAN_OR_EQUAL, "now"),
        ("created_at", Operator.IN, ["now", "2026-01-31T09:00:00+01:00"]),
        ("category__name", Operator.ICONTAINS, "tools"),
        ("stock", Operator.EQUALS, None),
        ("status", Operator.CHANGED_TO, "ACTIVE"),
    ],
)
def test_legitimate_leaves_pass_the_save_time_check(organization, field_name, operator, value):
    rule = AutomationRuleFactory(organization=organization)
    assert leaf_errors(rule, field_name, operator, value) == {}


@pytest.mark.parametrize("operator", [Operator.IS_NULL, Operator.IS_NOT_NULL, Operator.CHANGED])
def test_a_value_given_to_an_operator_that_takes_none_is_refused_at_save(organization, operator):
    # A run would ignore it: whoever wrote {"operator": "CHANGED", "value": "ACTIVE"} meant
    # CHANGED_TO, and must hear so when saving.
    rule = AutomationRuleFactory(organization=organization)
    assert leaf_errors(rule, "status", operator, "ACTIVE") == {
        "value": [f"{operator} takes no value: leave it out (or null)."]
    }
    assert leaf_errors(rule, "status", operator, None) == {}


# --- Relative dates ------------------------------------------------------------------------------


def at(*parts) -> datetime.datetime:
    return datetime.datetime(*parts, tzinfo=datetime.UTC)


def test_a_relative_date_is_resolved_at_the_evaluation_time(product, organization):
    """Created more than 7 days ago, evaluated on the machine's clock (time-machine moves it):
    false 6 days after creation, true 8 days after; the trace shows the value as written and
    the instant it stood for."""
    created = at(2026, 3, 2, 10, 0)
    Product.objects.filter(pk=product.pk).update(created_at=created)
    product.refresh_from_db()
    rule = AutomationRuleFactory(
        organization=organization,
        conditions=[dict(field_name="created_at", operator=Operator.LESS_THAN, value="-P7D")],
    )
    ctx = context_for(rule, product)
    with time_machine.travel(created + datetime.timedelta(days=6), tick=False):
        result = evaluate_conditions(rule, ctx)
    assert result.met is False
    assert result.trace[0]["expected"] == "-P7D"
    assert result.trace[0]["resolved_expected"] == "2026-03-01T10:00:00+00:00"
    with time_machine.travel(created + datetime.timedelta(days=8), tick=False):
        result = evaluate_conditions(rule, ctx)
    assert result.met is True
    assert result.trace[0]["resolved_expected"] == "2026-03-03T10:00:00+00:00"


def test_a_run_context_time_is_the_evaluation_time(product, organization):
    """A context that carries its own time (a run's, a schedule tick's) is resolved against it,
    one instant for every leaf of the evaluation."""
    rule = AutomationRuleFactory(
        organization=organization,
        conditions=[
            dict(field_name="created_at", operator=Operator.LESS_THAN, value="now"),
            dict(field_name="updated_at", operator=Operator.IN, value=["now", "+PT1H"]),
        ],
    )
    ctx = context_for(rule, product, now=at(2030, 1, 1, 12, 0))
    first, second = evaluate_conditions(rule, ctx).trace
    assert first["resolved_expected"] == "2030-01-01T12:00:00+00:00"
    assert first["passed"] is True
    assert second["expected"] == ["now", "+PT1H"]
    assert second["resolved_expected"] == ["2030-01-01T12:00:00+00:00", "2030-01-01T13:00:00+00:00"]


def test_plain_values_have_no_resolved_expected(product):
    _result, entry = check_leaf(product, "created_at", Operator.LESS_THAN, "2999-01-01")
    assert "resolved_expected" not in entry


def date_path():
    return ResolvedPath("due", (), named(models.DateField(), "due"), False)


def datetime_path():
    return ResolvedPath("due", (), named(models.DateTimeField(), "due"), False)


@pytest.mark.parametrize(
    ("zone", "value", "day"),
    [
        ("UTC", "now", datetime.date(2026, 1, 1)),
        ("UTC", "-P1D", datetime.date(2025, 12, 31)),
        ("Asia/Tokyo", "now", datetime.date(2026, 1, 2)),  # 08:30 on the 2nd in Tokyo
        ("Asia/Tokyo", "-P1D", datetime.date(2026, 1, 1)),
        ("UTC", "P1M", datetime.date(2026, 2, 1)),
        ("UTC", "-P1W", datetime.date(2025, 12, 25)),
    ],
)
def test_a_relative_date_counts_days_from_today_in_the_rules_time_zone(zone, value, day):
    clock = Clock(now=at(2026, 1, 1, 23, 30), zone_name=zone)
    test = leaf_test(Operator.EQUALS, date_path(), value, clock)
    assert test(day.isoformat()) is True
    assert test((day + datetime.timedelta(days=1)).isoformat()) is False


def test_a_relative_date_has_no_time_part():
    clock = Clock(now=at(2026, 1, 1, 12, 0))
    with pytest.raises(ConditionError, match="a date field compares whole days"):
        leaf_test(Operator.GREATER_THAN, date_path(), "-PT2H", clock)


def test_calendar_parts_move_the_wall_clock_and_time_parts_are_elapsed_time():
    """Across the spring-forward night in Paris, "-P1D" is the same wall time yesterday (23 hours
    back) while "-PT24H" is exactly 24 hours back; a month back from 31 March is 28 February."""
    clock = Clock(now=at(2026, 3, 29, 12, 0), zone_name="Europe/Paris")  # 14:00 CEST
    day_back = resolved_relative(datetime_path().field, "-P1D", clock)
    hours_back = resolved_relative(datetime_path().field, "-PT24H", clock)
    assert day_back == "2026-03-28T13:00:00+00:00"  # 14:00 CET
    assert hours_back == "2026-03-28T12:00:00+00:00"
    month_back = Clock(now=at(2026, 3, 31, 12, 0))
    assert resolved_relative(datetime_path().field, "-P1M", month_back) == (
        "2026-02-28T12:00:00+00:00"
    )
    assert resolved_relative(datetime_path().field, "-P1Y2M3W4DT5H6M7.5S", month_back) == (
        "2025-01-06T06:53:52.500000+00:00"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-P7X", "is not a relative date"),
        ("P", "is not a relative date"),
        ("PT", "is not a relative date"),
        ("P1DT", "is not a relative date"),
        ("P1.5D", "is not a relative date"),
        ("-p7d", "is not a relative date"),
        ("Now", "is not a relative date"),
        ("-P9999Y", "reaches outside the calendar"),
        ("P999999999D", "reaches outside the calendar"),
    ],
)
def test_malformed_relative_values_say_which_forms_are_accepted(value, message):
    clock = Clock(now=at(2026, 1, 1, 12, 0))
    with pytest.raises(ConditionError) as raised:
        leaf_test(Operator.LESS_THAN, datetime_path(), value, clock)
    assert message in str(raised.value)
    if message == "is not a relative date":
        assert '"-P7D" (7 days ago)' in str(raised.value)
