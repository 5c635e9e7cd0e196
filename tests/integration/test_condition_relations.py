"""Condition leaves on relation paths: read from the database, scoped to the run's organization."""

import pytest

from automation.conditions.evaluate import evaluate_conditions
from automation.conditions.tree import load_condition_tree
from automation.core.choices import Operator, TriggerEvent
from automation.core.context import RunContext
from automation.core.snapshots import snapshot
from catalog.models import Product
from tests.factories import (
    AutomationRuleFactory,
    CategoryFactory,
    ProductFactory,
    content_type_of,
)

pytestmark = pytest.mark.django_db


def context_for(rule, record, event=TriggerEvent.UPDATED, object_snapshot=None):
    return RunContext(
        organization_id=rule.organization_id,
        rule_id=rule.pk,
        rule_name=rule.name,
        trigger=rule.trigger_type,
        event=event,
        model=rule.model,
        object_id=str(record.pk),
        object=object_snapshot if object_snapshot is not None else snapshot(record),
    )


def product_rule(organization, *conditions):
    return AutomationRuleFactory(organization=organization, conditions=list(conditions))


def category_rule(organization, *conditions):
    return AutomationRuleFactory(
        organization=organization,
        content_type=content_type_of("catalog.category"),
        conditions=list(conditions),
    )


def leaf(field_name, operator, value=None, negate=False):
    return dict(field_name=field_name, operator=operator, value=value, negate=negate)


@pytest.fixture
def tools(organization):
    """A category of `organization` with three products."""
    category = CategoryFactory(organization=organization, name="Tools")
    for name, price in [("Hammer", "12.00"), ("Saw", "30.00"), ("Drill", "99.50")]:
        ProductFactory(organization=organization, category=category, name=name, price=price)
    return category


# --- To-one ------------------------------------------------------------------------------------


def test_to_one_path_reads_the_related_record(organization, tools):
    product = tools.products.get(name="Saw")
    rule = product_rule(
        organization,
        leaf("category__name", Operator.EQUALS, "Tools"),
        leaf("category__name", Operator.STARTS_WITH, "Too"),
        leaf("category__created_at", Operator.IS_NOT_NULL),
    )
    result = evaluate_conditions(rule, context_for(rule, product))
    assert result.met is True
    assert [entry["actual"] for entry in result.trace[:2]] == ["Tools", "Tools"]

    CategoryFactory(organization=organization, name="Other")
    tools.name = "Garden"
    tools.save()
    result = evaluate_conditions(rule, context_for(rule, product))
    assert result.met is False
    assert result.trace[0]["actual"] == "Garden"


def test_to_one_path_through_a_null_foreign_key_reads_null(organization):
    product = ProductFactory(organization=organization, category=None)
    rule = product_rule(
        organization,
        leaf("category__name", Operator.IS_NULL),
        leaf("category__name", Operator.NOT_EQUALS, "Tools"),
    )
    result = evaluate_conditions(rule, context_for(rule, product))
    assert result.met is True
    assert [entry["actual"] for entry in result.trace] == [None, None]


# --- To-many -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "passed"),
    [
        (leaf("products__name", Operator.EQUALS, "Saw"), True),
        (leaf("products__name", Operator.EQUALS, "Chisel"), False),
        (leaf("products__price", Operator.GREATER_THAN, "99"), True),  # only the drill
        (leaf("products__price", Operator.GREATER_THAN, "100"), False),
        (leaf("products__name", Operator.IN, ["Chisel", "Drill"]), True),
        (leaf("products__name", Operator.REGEX, "^H.*r$"), True),
        (leaf("products__name", Operator.IS_NULL), False),
        # The leaf's negate applies to the aggregated verdict: "no product is named Saw".
        (leaf("products__name", Operator.EQUALS, "Saw", negate=True), False),
        (leaf("products__name", Operator.EQUALS, "Chisel", negate=True), True),
        # Any product not named Saw: the hammer is one.
        (leaf("products__name", Operator.NOT_EQUALS, "Saw"), True),
    ],
)
def test_to_many_path_is_true_when_any_related_row_matches(organization, tools, condition, passed):
    rule = category_rule(organization, condition)
    result = evaluate_conditions(rule, context_for(rule, tools))
    entry = result.trace[0]
    assert entry["error"] is None
    assert entry["passed"] is passed
    assert result.met is passed


def test_to_many_trace_lists_the_related_values(organization, tools):
    rule = category_rule(organization, leaf("products__name", Operator.EQUALS, "Saw"))
    result = evaluate_conditions(rule, context_for(rule, tools))
    assert sorted(result.trace[0]["actual"]) == ["Drill", "Hammer", "Saw"]


def test_to_many_path_without_rows_is_false(organization):
    empty = CategoryFactory(organization=organization)
    rule = category_rule(
        organization,
        leaf("products__name", Operator.IS_NULL),
        leaf("products__name", Operator.NOT_EQUALS, "x"),
    )
    result = evaluate_conditions(rule, context_for(rule, empty))
    assert [entry["passed"] for entry in result.trace] == [False, False]
    assert result.trace[0]["actual"] == []


def test_a_wrong_type_on_a_to_many_path_is_an_error(organization, tools):
    rule = category_rule(organization, leaf("products__price", Operator.LESS_THAN, "cheap"))
    result = evaluate_conditions(rule, context_for(rule, tools))
    assert result.met is False
    assert "cannot be compared with price" in result.trace[0]["error"]


def test_one_query_per_distinct_relation_path(organization, tools, django_assert_num_queries):
    product = tools.products.get(name="Saw")
    rule = product_rule(
        organization,
        leaf("name", Operator.EQUALS, "Saw"),
        leaf("category__name", Operator.EQUALS, "Tools"),
        leaf("category__name", Operator.ENDS_WITH, "ols", negate=True),
        leaf("category__products__name", Operator.EQUALS, "Drill"),
    )
    tree = load_condition_tree(rule)
    ctx = context_for(rule, product)
    evaluate_conditions(rule, ctx, tree=tree)  # warms the ContentType cache
    with django_assert_num_queries(2):
        result = evaluate_conditions(rule, ctx, tree=tree)
    assert [entry["passed"] for entry in result.trace] == [True, True, False, True]


# --- DELETED -----------------------------------------------------------------------------------


def test_deleted_record_resolves_relations_from_its_snapshot(organization, tools):
    product = tools.products.get(name="Hammer")
    rule = product_rule(
        organization,
        leaf("category__name", Operator.EQUALS, "Tools"),
        leaf("category__products__name", Operator.EQUALS, "Drill"),
    )
    before_delete = snapshot(product)
    product.delete()
    result = evaluate_conditions(
        rule, context_for(rule, product, TriggerEvent.DELETED, object_snapshot=before_delete)
    )
    assert result.met is True
    assert result.trace[0]["actual"] == "Tools"
    assert "Hammer" not in result.trace[1]["actual"]


def test_deleted_record_has_no_to_many_rows(organization, tools, django_assert_num_queries):
    rule = category_rule(organization, leaf("products__name", Operator.EQUALS, "Saw"))
    before_delete = snapshot(tools)
    tree = load_condition_tree(rule)
    ctx = context_for(rule, tools, TriggerEvent.DELETED, object_snapshot=before_delete)
    with django_assert_num_queries(0):
        result = evaluate_conditions(rule, ctx, tree=tree)
    assert result.met is False
    assert result.trace[0]["actual"] == []
    assert result.trace[0]["error"] is None


# --- Organization isolation --------------------------------------------------------------------


def test_a_foreign_key_into_another_organization_reads_nothing(organization, other_organization):
    theirs = CategoryFactory(organization=other_organization, name="Secret")
    product = ProductFactory(organization=organization, category=None)
    # Bypasses Product.clean, as corrupt data or a bug might.
    Product.objects.filter(pk=product.pk).update(category=theirs)
    product.refresh_from_db()
    rule = product_rule(
        organization,
        leaf("category__name", Operator.EQUALS, "Secret"),
        leaf("category__name", Operator.IS_NULL, negate=True),
    )
    result = evaluate_conditions(rule, context_for(rule, product))
    assert result.met is False
    assert [entry["actual"] for entry in result.trace] == [None, None]
    assert [entry["passed"] for entry in result.trace] == [False, False]


def test_a_to_many_path_skips_rows_of_another_organization(organization, other_organization, tools):
    intruder = ProductFactory(organization=other_organization, name="Secret")
    Product.objects.filter(pk=intruder.pk).update(category=tools)
    rule = category_rule(organization, leaf("products__name", Operator.EQUALS, "Secret"))
    result = evaluate_conditions(rule, context_for(rule, tools))
    assert result.met is False
    assert "Secret" not in result.trace[0]["actual"]
    assert sorted(result.trace[0]["actual"]) == ["Drill", "Hammer", "Saw"]


def test_a_multi_hop_path_is_scoped_at_every_hop(organization, other_organization, tools):
    product = tools.products.get(name="Saw")
    intruder = ProductFactory(organization=other_organization, name="Secret")
    Product.objects.filter(pk=intruder.pk).update(category=tools)
    rule = product_rule(organization, leaf("category__products__name", Operator.EQUALS, "Secret"))
    result = evaluate_conditions(rule, context_for(rule, product))
    assert result.met is False
    assert "Secret" not in result.trace[0]["actual"]


def test_a_context_of_another_organization_is_refused(organization, other_organization, tools):
    product = tools.products.get(name="Saw")
    rule = product_rule(organization, leaf("category__name", Operator.EQUALS, "Tools"))
    ctx = context_for(rule, product)
    ctx.organization_id = other_organization.pk
    result = evaluate_conditions(rule, ctx)
    assert result.met is False
    assert "not the rule's organization" in result.trace[0]["error"]
