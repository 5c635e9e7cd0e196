"""The operators: what each leaf test compares (ordering, text, REGEX, relative dates,
CHANGED...), and the save-time check of a leaf (`leaf_errors`) that goes through the same code."""

from django.db import models

from automation.conditions import payload, relative_dates, results
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
    Operator,
    TriggerEvent,
    TriggerType,
)
from automation.core.registry import PathError, ResolvedPath, resolve_path
from automation.core.snapshots import json_value

VALUELESS_OPERATORS = {Operator.IS_NULL, Operator.IS_NOT_NULL, Operator.CHANGED}


def leaf_test(operator: Operator, path: ResolvedPath, expected, clock: Clock):
    """The test of one leaf (a function of the actual value, or of the field's change for the
    CHANGED operators), its rule side checked first: ConditionError (OperatorError when the
    operator does not apply to the field) before any record is seen.

    The one checker of a leaf's rule side: evaluation calls it for every leaf, and `leaf_errors`
    when the rule is saved. Relation paths are checked against their final field.
    """
    if operator in CHANGE_OPERATORS:
        if not path.is_local:
            raise OperatorError(f"{operator} applies to the record's own fields only.")
        return change_comparison(operator, path.field, expected, clock)
    return comparison(operator, path.field, expected, clock)


def leaf_errors(rule, field_path, operator, value, action_order=None) -> dict[str, list[str]]:
    """Save-time check of one condition of `rule` (RuleCondition.clean):
    {"field_name" | "operator" | "value": [messages]}, {} when it is valid. `action_order`: the
    position of the action whose `when` holds the condition (None: the rule's conditions), which
    may test earlier actions' results (results.py).

    The rule's side is checked by `leaf_test`, as every run of the rule would check it, against
    the current time (relative dates are resolved, so one that leaves the calendar is refused).
    """
    if results.is_results_path(field_path):
        if action_order is None:
            return {"field_name": [results.ONLY_IN_WHEN]}
        return results.leaf_errors(field_path, operator, value, action_order)
    errors: dict[str, list[str]] = {}
    if operator not in Operator.values:
        return errors  # the field's choices report it
    operator = Operator(operator)
    if operator in CHANGE_OPERATORS:
        refusal = change_refusal(operator, rule)
        if refusal:
            errors["operator"] = [refusal]
    if rule.trigger_type == TriggerType.WEBHOOK or payload.is_payload_path(field_path):
        # The rule-side refusal of a CHANGED operator first, as for record fields.
        return {**payload.leaf_errors(rule, field_path, operator, value), **errors}
    if not rule.content_type_id:
        errors["field_name"] = ["This rule has no model, so it has no fields to test."]
        return errors
    try:
        path = resolve_path(rule.model, field_path)
    except (PathError, LookupError) as exc:
        errors["field_name"] = [str(exc)]
        return errors
    if "operator" in errors:
        return errors
    if operator in VALUELESS_OPERATORS and value is not None:
        # A run ignores it; an author who gave one meant something else (EQUALS, CHANGED_TO).
        errors["value"] = [f"{operator} takes no value: leave it out (or null)."]
        return errors
    try:
        leaf_test(operator, path, value, Clock.of(rule))
    except OperatorError as exc:
        errors["operator"] = [str(exc)]
    except ConditionError as exc:
        errors["value"] = [str(exc)]
    return errors


def change_refusal(operator: Operator, rule) -> str | None:
    """Why a CHANGED operator cannot work on `rule`'s trigger, or None when it can."""
    if rule.trigger_type != TriggerType.EVENT:
        return f"{operator} applies to EVENT rules only."
    if rule.trigger_event == TriggerEvent.DELETED:
        return f"{operator} does not apply to a DELETED rule: a deleted record has no changes."
    if rule.trigger_event == TriggerEvent.CREATED:
        if operator == Operator.CHANGED:
            return (
                "CHANGED is true of every field set on a CREATED rule (on CREATED every set "
                "field counts as changed from null): use IS_NOT_NULL."
            )
        if operator == Operator.CHANGED_FROM:
            return (
                "CHANGED_FROM does not apply to a CREATED rule: a new record's fields always "
                "change from null. Use IS_NOT_NULL, or CHANGED_TO or EQUALS for the new value."
            )
    return None


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

    def actual_of(actual):
        return coerce_value(model_field, actual)

    if operator in (Operator.EQUALS, Operator.NOT_EQUALS):
        wanted = None if expected is None else coerce_expected(model_field, expected, clock)

        def equal(actual):
            if actual is None or wanted is None:
                return actual is None and wanted is None
            return actual_of(actual) == wanted

        if operator == Operator.EQUALS:
            return equal
        return lambda actual: not equal(actual)

    if operator in (Operator.IN, Operator.NOT_IN):
        if not isinstance(expected, list):
            raise ConditionError(f"{operator} needs a list of values.")
        wanted = [
            coerce_expected(model_field, item, clock) for item in expected if item is not None
        ]
        if operator == Operator.IN:
            return lambda actual: actual is not None and actual_of(actual) in wanted
        return lambda actual: actual is not None and actual_of(actual) not in wanted

    if expected is None:
        raise ConditionError(f"{operator} needs a value.")

    if operator in ORDERING:
        if base_field(model_field).get_internal_type() == "BooleanField":
            raise OperatorError(f"{operator} does not apply to a true/false field.")
        wanted = coerce_expected(model_field, expected, clock)
        test = ORDERING[operator]
        return lambda actual: actual is not None and test(actual_of(actual), wanted)

    require_text_field(operator, model_field)
    if not isinstance(expected, str):
        raise ConditionError(f"{operator} needs a text value, not {json_type(expected)}.")

    if operator == Operator.REGEX:
        return regex_test(expected, actual_of)
    test = TEXT[operator]
    return lambda actual: actual is not None and test(actual_of(actual), expected)


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
