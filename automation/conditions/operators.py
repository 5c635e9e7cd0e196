"""The operators: what each leaf test compares (ordering, text, REGEX, relative dates,
CHANGED..., the crossings), checked on the rule's side first by `leaf_test`, which evaluation and
the save-time check of a leaf (checks.py) both go through."""

from django.db import models

from automation.conditions import relative_dates
from automation.conditions.coercion import (
    base_field,
    coerce_expected,
    coerce_value,
    resolve_relative,
)
from automation.conditions.comparisons import ORDERING, TEXT, json_type, regex_test
from automation.conditions.tree import Clock, ConditionError, OperatorError
from automation.core.choices import (
    CHANGE_OPERATORS,
    CROSSING_OPERATORS,
    Operator,
)
from automation.core.registry import ResolvedPath
from automation.core.snapshots import json_value


def leaf_test(operator: Operator, path: ResolvedPath, expected, clock: Clock):
    """The test of one leaf (a function of the actual value, of the field's change for the
    CHANGED operators, of its (old, new) values for the crossings), its rule side checked first: ConditionError (OperatorError when the
    operator does not apply to the field) before any record is seen.

    The one checker of a leaf's rule side: evaluation calls it for every leaf, and
    `checks.leaf_errors` when the rule is saved. Relation paths are checked against their final
    field.
    """
    if operator in CHANGE_OPERATORS:
        if not path.is_local:
            raise OperatorError(f"{operator} applies to the record's own fields only.")
        return change_comparison(operator, path.field, expected, clock)
    if operator in CROSSING_OPERATORS:
        if not path.is_local:
            raise OperatorError(
                f"{operator} applies to the record's own fields only: the values related "
                "records had before the write are not kept."
            )
        return crossing_comparison(operator, path.field, expected, clock)
    return comparison(operator, path.field, expected, clock)


def resolved_relative(model_field, expected, clock: Clock):
    """What a relative expected value ("-P7D", or an IN list holding some) stood for, as JSON,
    for the trace; None when nothing in it is relative. Call it after `leaf_test` has accepted
    the value."""
    if not isinstance(base_field(model_field), models.DateField):
        return None
    if relative_dates.is_relative(expected):
        return json_value(resolve_relative(model_field, expected, clock))
    if isinstance(expected, list) and any(map(relative_dates.is_relative, expected)):
        return [
            json_value(resolve_relative(model_field, item, clock))
            if relative_dates.is_relative(item)
            else item
            for item in expected
        ]
    return None


def comparison(operator: Operator, model_field, expected, clock: Clock):
    """A function actual -> bool for a non-CHANGED operator, the expected value checked first.

    The expected value is coerced once, before any actual value is seen, so a broken rule is an
    error even when the record's value is null.
    """
    if operator == Operator.IS_NULL:
        return lambda actual: actual is None
    if operator == Operator.IS_NOT_NULL:
        return lambda actual: actual is not None

    if operator in (Operator.EQUALS, Operator.NOT_EQUALS):
        wanted = None if expected is None else coerce_expected(model_field, expected, clock)
        return compare_with(operator, model_field, wanted)

    if operator in (Operator.IN, Operator.NOT_IN):
        if not isinstance(expected, list):
            raise ConditionError(f"{operator} needs a list of values.")
        wanted = [
            coerce_expected(model_field, item, clock) for item in expected if item is not None
        ]

        def actual_of(actual):
            return coerce_value(model_field, actual)

        if operator == Operator.IN:
            return lambda actual: actual is not None and actual_of(actual) in wanted
        return lambda actual: actual is not None and actual_of(actual) not in wanted

    if expected is None:
        raise ConditionError(f"{operator} needs a value.")
    require_operator_applies(operator, model_field)
    if operator in ORDERING:
        return compare_with(operator, model_field, coerce_expected(model_field, expected, clock))
    if not isinstance(expected, str):
        raise ConditionError(f"{operator} needs a text value, not {json_type(expected)}.")
    if operator == Operator.REGEX:
        return regex_test(expected, lambda actual: coerce_value(model_field, actual))
    return compare_with(operator, model_field, expected)


def compare_with(operator: Operator, model_field, wanted):
    """A function actual -> bool comparing the actual value, coerced to `model_field`'s type,
    with `wanted`, already coerced (a value of the rule, or another field's value): EQUALS and
    NOT_EQUALS (null equals only null), the orderings and the text operators (false when either
    side is null)."""

    def actual_of(actual):
        return coerce_value(model_field, actual)

    if operator in (Operator.EQUALS, Operator.NOT_EQUALS):

        def equal(actual):
            if actual is None or wanted is None:
                return actual is None and wanted is None
            return actual_of(actual) == wanted

        if operator == Operator.EQUALS:
            return equal
        return lambda actual: not equal(actual)
    test = ORDERING.get(operator) or TEXT[operator]
    if wanted is None:
        return lambda actual: False
    return lambda actual: actual is not None and test(actual_of(actual), wanted)


# A crossing: (the test of the value before the write, the test of the value after it).
CROSSINGS = {
    Operator.CROSSED_BELOW: (Operator.GREATER_THAN_OR_EQUAL, Operator.LESS_THAN),
    Operator.CROSSED_ABOVE: (Operator.LESS_THAN_OR_EQUAL, Operator.GREATER_THAN),
}


def crossing_comparison(operator: Operator, model_field, expected, clock: Clock):
    """A function (old, new) -> bool for CROSSED_BELOW / CROSSED_ABOVE: was the field on one side
    of the value before the write (>= for BELOW, <= for ABOVE) and on the other after it (<, >)?
    Null on either side is no crossing. The expected value checked first, as in comparison."""
    require_operator_applies(operator, model_field)
    if expected is None:
        raise ConditionError(f"{operator} needs a value.")
    wanted = coerce_expected(model_field, expected, clock)
    return crossing_with(operator, model_field, wanted, wanted)


def crossing_with(operator: Operator, model_field, wanted_before, wanted_after):
    """The crossing test against coerced values: the old value is compared with `wanted_before`,
    the new one with `wanted_after` (they differ when the leaf compares with another field that
    the write changed too)."""
    before, after = CROSSINGS[operator]
    test_before = compare_with(before, model_field, wanted_before)
    test_after = compare_with(after, model_field, wanted_after)

    def crossed(old, new) -> bool:
        was, is_now = test_before(old), test_after(new)  # both, so a bad value is an error
        return was and is_now

    return crossed


def require_operator_applies(operator: Operator, model_field) -> None:
    """OperatorError when `operator` (an ordering, a crossing or a text operator) does not apply
    to the field's type."""
    if operator in ORDERING:
        if base_field(model_field).get_internal_type() == "BooleanField":
            raise OperatorError(f"{operator} does not apply to a true/false field.")
    elif operator in CROSSINGS:
        if not is_crossable(model_field):
            raise OperatorError(
                f"{operator} applies to numbers, dates and date-times; {model_field.name} is "
                f"{model_field.get_internal_type()}."
            )
    elif operator in TEXT or operator == Operator.REGEX:
        require_text_field(operator, model_field)


def is_crossable(model_field) -> bool:
    """A number (not a foreign key: ids do not cross), a date or a date-time."""
    if model_field.is_relation:
        return False
    kinds = (models.IntegerField, models.DecimalField, models.FloatField, models.DateField)
    return isinstance(model_field, kinds)


def change_comparison(operator: Operator, model_field, expected, clock: Clock):
    """A function change -> bool for CHANGED / CHANGED_FROM / CHANGED_TO, where a change is
    {"old", "new"} (None: unchanged); the expected value checked first, as in comparison."""
    if operator == Operator.CHANGED:
        return lambda change: change is not None
    wanted = None if expected is None else coerce_expected(model_field, expected, clock)
    side_name = "old" if operator == Operator.CHANGED_FROM else "new"

    def test(change):
        if change is None:
            return False
        side = change.get(side_name)
        side = None if side is None else coerce_value(model_field, side)
        return side == wanted

    return test


def require_text_field(operator, model_field) -> None:
    if not isinstance(base_field(model_field), models.CharField | models.TextField):
        raise OperatorError(
            f"{operator} applies to text fields; {model_field.name} is "
            f"{model_field.get_internal_type()}."
        )
