"""Conditions on the record before the write (`previous`), the crossings, and a field compared with
another field (`valueField`): evaluation, the trace, and what is refused at save."""

import datetime
import decimal

import pytest
import time_machine

from automation.conditions.checks import leaf_errors
from automation.conditions.evaluate import evaluate_conditions
from automation.core.choices import Operator, TriggerEvent, TriggerType
from catalog.choices import ProductStatus
from tests.factories import AutomationRuleFactory, CategoryFactory, ProductFactory
from tests.unit.test_conditions import context_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def product(organization):
    return ProductFactory(
        organization=organization,
        category=CategoryFactory(organization=organization, name="Tools"),
        name="Blue Tools",
        description="Tools",
        status=ProductStatus.ACTIVE,
        price=decimal.Decimal("12.50"),
        stock=3,
    )


def evaluate(record, changes=None, **leaf):
    """Evaluate an UPDATED rule with one leaf against `record` and `changes`: (met, entry)."""
    rule = AutomationRuleFactory(organization=record.organization, conditions=[leaf])
    result = evaluate_conditions(rule, context_for(rule, record, changes=changes))
    (entry,) = result.trace
    return result.met, entry


def stock_change(old, new):
    return {"stock": {"old": old, "new": new}}


# --- Crossings --------------------------------------------------------------------------------

CROSSINGS = [
    # (operator, old, new, threshold, crossed)
    (Operator.CROSSED_BELOW, 10, 3, 5, True),
    (Operator.CROSSED_BELOW, 3, 2, 5, False),  # already below: no second crossing
    (Operator.CROSSED_BELOW, 5, 4, 5, True),  # from exactly the threshold
    (Operator.CROSSED_BELOW, 6, 5, 5, False),  # to exactly the threshold: not below
    (Operator.CROSSED_BELOW, 2, 8, 5, False),  # the other way
    (Operator.CROSSED_BELOW, None, 3, 5, False),  # no value before: no crossing
    (Operator.CROSSED_BELOW, 10, None, 5, False),
    (Operator.CROSSED_ABOVE, 3, 10, 5, True),
    (Operator.CROSSED_ABOVE, 5, 6, 5, True),
    (Operator.CROSSED_ABOVE, 6, 7, 5, False),
    (Operator.CROSSED_ABOVE, 4, 5, 5, False),
    (Operator.CROSSED_ABOVE, 10, 3, 5, False),
]


@pytest.mark.parametrize(("operator", "old", "new", "threshold", "crossed"), CROSSINGS)
def test_a_crossing_needs_the_old_value_on_one_side_and_the_new_on_the_other(
    organization, operator, old, new, threshold, crossed
):
    record = ProductFactory(organization=organization, stock=new if new is not None else 0)
    changes = stock_change(old, new)
    if new is None:
        # A snapshot holding null (stock is NOT NULL in the table; a dry run's record could).
        changes = stock_change(old, None)
    rule = AutomationRuleFactory(
        organization=organization,
        conditions=[dict(field_name="stock", operator=operator, value=threshold)],
    )
    ctx = context_for(rule, record, changes=changes)
    ctx.object = {**ctx.object, "stock": new}
    result = evaluate_conditions(rule, ctx)
    (entry,) = result.trace
    assert (result.met, entry["passed"], entry["error"]) == (crossed, crossed, None)
    # The trace shows both sides: the value before the write and after it.
    assert (entry["actual_previous"], entry["actual"]) == (old, new)


def test_a_crossing_fires_once_as_the_stock_falls_10_3_2_1(product):
    verdicts = []
    for old, new in [(10, 3), (3, 2), (2, 1)]:
        product.stock = new
        met, _entry = evaluate(
            product,
            stock_change(old, new),
            field_name="stock",
            operator=Operator.CROSSED_BELOW,
            value=5,
        )
        verdicts.append(met)
    assert verdicts == [True, False, False]


def test_a_field_the_write_did_not_change_had_its_current_value_so_it_did_not_cross(product):
    met, entry = evaluate(
        product,
        {"name": {"old": "Old", "new": "Blue Tools"}},
        field_name="stock",
        operator=Operator.CROSSED_BELOW,
        value=5,
    )
    assert met is False
    assert (entry["actual_previous"], entry["actual"]) == (3, 3)


def test_crossings_of_decimals_dates_and_relative_date_times(product):
    met, entry = evaluate(
        product,
        {"price": {"old": "20.00", "new": "12.50"}},
        field_name="price",
        operator=Operator.CROSSED_BELOW,
        value="15",
    )
    assert (met, entry["actual_previous"], entry["actual"]) == (True, "20.00", "12.50")

    now = datetime.datetime(2026, 3, 10, 12, tzinfo=datetime.UTC)
    ten_days_ago = (now - datetime.timedelta(days=10)).isoformat()
    with time_machine.travel(now, tick=False):
        # updated_at moved from ten days ago to now: it crossed above "7 days ago".
        product.updated_at = now
        met, entry = evaluate(
            product,
            {"updated_at": {"old": ten_days_ago, "new": now.isoformat()}},
            field_name="updated_at",
            operator=Operator.CROSSED_ABOVE,
            value="-P7D",
        )
    assert met is True
    assert entry["resolved_expected"] == (now - datetime.timedelta(days=7)).isoformat()


# --- previous ----------------------------------------------------------------------------------


def test_previous_tests_the_value_before_the_write_and_the_trace_shows_both(product):
    # "old >= 5 AND new < 5", the long form of CROSSED_BELOW 5.
    rule = AutomationRuleFactory(
        organization=product.organization,
        conditions=[
            dict(
                field_name="stock",
                operator=Operator.GREATER_THAN_OR_EQUAL,
                value=5,
                previous=True,
            ),
            dict(field_name="stock", operator=Operator.LESS_THAN, value=5),
        ],
    )
    result = evaluate_conditions(rule, context_for(rule, product, changes=stock_change(10, 3)))
    assert result.met is True
    before, after = result.trace
    assert before == {
        "path": "conditions.conditions.0",
        "field": "stock",
        "operator": "GREATER_THAN_OR_EQUAL",
        "expected": 5,
        "actual": 3,
        "passed": True,
        "error": None,
        "previous": True,
        "actual_previous": 10,
    }
    assert "previous" not in after and "actual_previous" not in after
    # Already below before the write: the first leaf fails.
    again = evaluate_conditions(rule, context_for(rule, product, changes=stock_change(3, 2)))
    assert (again.met, again.trace[0]["passed"]) == (False, False)


def test_previous_of_an_unchanged_field_is_its_current_value(product):
    met, entry = evaluate(
        product,
        stock_change(10, 3),
        field_name="status",
        operator=Operator.EQUALS,
        value="ACTIVE",
        previous=True,
    )
    assert (met, entry["actual_previous"], entry["actual"]) == (True, "ACTIVE", "ACTIVE")


# --- valueField ----------------------------------------------------------------------------------


def test_a_field_compared_with_another_field_shows_its_value_as_expected(product):
    met, entry = evaluate(
        product, field_name="stock", operator=Operator.LESS_THAN, value_field="price"
    )
    # 3 < 12.50: an integer compares exactly with a decimal.
    assert (met, entry["expected"], entry["actual"], entry["value_field"]) == (
        True,
        "12.50",
        3,
        "price",
    )
    met, entry = evaluate(
        product, field_name="name", operator=Operator.CONTAINS, value_field="category__name"
    )
    assert (met, entry["expected"], entry["actual"]) == (True, "Tools", "Blue Tools")
    met, _entry = evaluate(
        product, field_name="description", operator=Operator.EQUALS, value_field="name"
    )
    assert met is False


def test_a_null_other_field_equals_only_null_and_fails_orderings(organization):
    lonely = ProductFactory(organization=organization, category=None, name="Lamp")
    met, entry = evaluate(
        lonely, field_name="name", operator=Operator.NOT_EQUALS, value_field="category__name"
    )
    assert (met, entry["expected"]) == (True, None)
    met, _entry = evaluate(
        lonely, field_name="name", operator=Operator.GREATER_THAN, value_field="category__name"
    )
    assert met is False


def test_a_crossing_with_another_field_compares_old_with_old_and_new_with_new(product):
    # Nothing about the stock changed, but the write raised the price past it: stock - price
    # went from >= 0 to < 0, so the stock crossed below the price.
    product.price = decimal.Decimal("12.50")
    met, entry = evaluate(
        product,
        {"price": {"old": "2.00", "new": "12.50"}},
        field_name="stock",
        operator=Operator.CROSSED_BELOW,
        value_field="price",
    )
    assert met is True
    assert entry["actual_previous"] == entry["actual"] == 3
    assert (entry["expected_previous"], entry["expected"]) == ("2.00", "12.50")


def test_previous_with_a_value_field_reads_both_fields_before_the_write(product):
    met, entry = evaluate(
        product,
        {"stock": {"old": 1, "new": 3}, "price": {"old": "2.00", "new": "12.50"}},
        field_name="stock",
        operator=Operator.LESS_THAN,
        value_field="price",
        previous=True,
    )
    assert met is True  # 1 < 2.00 before the write
    assert (entry["actual_previous"], entry["expected_previous"]) == (1, "2.00")


# --- Refused at save -----------------------------------------------------------------------------

CREATED = dict(trigger_event=TriggerEvent.CREATED)
SCHEDULE = dict(schedule_rule=True)


@pytest.mark.parametrize(
    ("rule_options", "leaf", "expected"),
    [
        (
            CREATED,
            dict(field_name="stock", operator=Operator.CROSSED_BELOW, value=5),
            {
                "operator": [
                    "CROSSED_BELOW compares a field's value before the write with its value "
                    "after it, which only the runs of UPDATED rules have. On CREATED every field "
                    "was null before, so nothing crosses: use LESS_THAN or GREATER_THAN."
                ]
            },
        ),
        (
            {},
            dict(field_name="name", operator=Operator.CROSSED_ABOVE, value="m"),
            {
                "operator": [
                    "CROSSED_ABOVE applies to numbers, dates and date-times; name is CharField."
                ]
            },
        ),
        (
            {},
            dict(field_name="category", operator=Operator.CROSSED_ABOVE, value=1),
            {
                "operator": [
                    "CROSSED_ABOVE applies to numbers, dates and date-times; category is "
                    "ForeignKey."
                ]
            },
        ),
        (
            {},
            dict(field_name="category__id", operator=Operator.CROSSED_BELOW, value=5),
            {
                "operator": [
                    "CROSSED_BELOW applies to the record's own fields only: the values related "
                    "records had before the write are not kept."
                ]
            },
        ),
        (
            {},
            dict(field_name="stock", operator=Operator.CROSSED_BELOW),
            {"value": ["CROSSED_BELOW needs a value."]},
        ),
        (
            CREATED,
            dict(field_name="stock", operator=Operator.LESS_THAN, value=5, previous=True),
            {
                "previous": [
                    "previous reads the record as it was before the write, which only the runs "
                    "of UPDATED rules have: on CREATED every field was null, and deletions, "
                    "schedules, webhooks and runs by hand have no write before them."
                ]
            },
        ),
        (
            {},
            dict(field_name="category__name", operator=Operator.EQUALS, value="x", previous=True),
            {
                "previous": [
                    "previous reads the record's own fields only: the values related records "
                    "had before the write are not kept."
                ]
            },
        ),
        (
            {},
            dict(field_name="stock", operator=Operator.CHANGED, previous=True),
            {
                "previous": [
                    "CHANGED compares the values before and after the write itself: leave "
                    "previous out."
                ]
            },
        ),
        (
            {},
            dict(field_name="stock", operator=Operator.LESS_THAN, value=5, value_field="price"),
            {"value": ["Give a value or a valueField, not both."]},
        ),
        (
            {},
            dict(field_name="stock", operator=Operator.LESS_THAN, value_field="name"),
            {
                "value_field": [
                    'stock is a number and valueField "name" is text: a field compares with a '
                    "field of the same kind (numbers with numbers, dates with dates, date-times "
                    "with date-times, text with text, true/false with true/false, a foreign key "
                    "with a foreign key to the same model or that model's id)."
                ]
            },
        ),
        (
            {},
            dict(field_name="stock", operator=Operator.LESS_THAN, value_field="stok"),
            {
                "value_field": [
                    '"stok" is not a readable field of catalog.product. Did you mean "stock"?'
                ]
            },
        ),
        (
            {},
            dict(field_name="stock", operator=Operator.IN, value_field="price"),
            {
                "operator": [
                    "IN compares with a list of values, not with another field: use EQUALS."
                ]
            },
        ),
        (
            {},
            dict(field_name="stock", operator=Operator.CHANGED_TO, value_field="price"),
            {
                "operator": [
                    "CHANGED_TO compares with a value, not with another field: use CHANGED and "
                    "EQUALS with a valueField (previous: true reads the value before the write)."
                ]
            },
        ),
        (
            {},
            dict(field_name="stock", operator=Operator.CONTAINS, value_field="price"),
            {"operator": ["CONTAINS applies to text fields; stock is IntegerField."]},
        ),
        (
            {},
            dict(
                field_name="stock",
                operator=Operator.CROSSED_BELOW,
                value_field="category__id",
            ),
            {
                "value_field": [
                    "With CROSSED_BELOW, valueField is a field of the record's own: its value "
                    'before the write is read too, and "category__id" is a related record\'s.'
                ]
            },
        ),
        (
            SCHEDULE,
            dict(field_name="name", operator=Operator.EQUALS, value="x", previous=True),
            {
                "field_name": ["This rule has no model, so it has no fields to test."],
                "previous": [
                    "previous reads the record as it was before the write, which only the runs "
                    "of UPDATED rules have: on CREATED every field was null, and deletions, "
                    "schedules, webhooks and runs by hand have no write before them."
                ],
            },
        ),
    ],
)
def test_what_cannot_work_is_refused_at_save_naming_the_part(
    organization, rule_options, leaf, expected
):
    rule = AutomationRuleFactory(organization=organization, **rule_options)
    options = {key: leaf[key] for key in ("previous", "value_field") if key in leaf}
    errors = leaf_errors(rule, leaf["field_name"], leaf["operator"], leaf.get("value"), **options)
    assert errors == expected


def test_a_category_compares_with_a_products_category_and_a_relation_through_a_list_is_refused(
    organization,
):
    rule = AutomationRuleFactory(organization=organization)
    assert leaf_errors(rule, "category", "EQUALS", None, value_field="category__id") == {}
    category_rule = AutomationRuleFactory(
        organization=organization,
        content_type=rule.content_type.__class__.objects.get(app_label="catalog", model="category"),
    )
    assert leaf_errors(category_rule, "name", "EQUALS", None, value_field="products__name") == {
        "value_field": [
            'valueField reads one value, and "products__name" goes through a list of records.'
        ]
    }


def test_a_webhook_rule_has_no_previous_and_no_value_field(organization):
    rule = AutomationRuleFactory(
        organization=organization,
        trigger_type=TriggerType.WEBHOOK,
        trigger_event=None,
        content_type=None,
    )
    errors = leaf_errors(
        rule, "payload.total", "LESS_THAN", None, previous=True, value_field="payload.max"
    )
    assert set(errors) == {"previous", "value_field", "value"}  # LESS_THAN needs a value
    crossing = leaf_errors(rule, "payload.total", "CROSSED_BELOW", 5)
    assert crossing["operator"][0].startswith("CROSSED_BELOW compares a field's value before")
