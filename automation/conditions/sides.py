"""What a leaf compares besides "the record's field now, with a value": the record as it was
before the write (`previous: true`), the crossings that read both sides of the write
(CROSSED_BELOW, CROSSED_ABOVE), and another field of the record instead of a value
(`valueField`).

- The value before the write comes from the run's `changes`: a field the write did not change had
  the value it has now. Only the record's own fields have one (the values related records had
  are not kept), and only the runs of UPDATED rules have a write before them: on CREATED every
  field was null, and deletions, schedules, webhooks and runs by hand have none. So `previous`
  and the crossings are refused at save elsewhere. A run of an UPDATED rule by hand has no
  changes: every field had its current value, so nothing crosses (a dry run can be given the
  changes to simulate).
- A crossing needs a value on both sides: null before or after the write is no crossing.
- `valueField` names a readable path of the rule's model whose value takes the place of `value`:
  one value, so not through a to-many relation. With `previous` or a crossing it must be a field
  of the record's own, because its value before the write is read too: a crossing with another
  field compares the old values together and the new values together ("stock crossed below
  reorder_level" when stock - reorder_level went from >= 0 to < 0, whichever the write changed);
  `previous` reads both fields as they were.
- The two fields must be of one kind (`kind_of`); each side is coerced to its own field's type,
  so an integer compares exactly with a decimal. A null other value equals only null and fails
  every other operator, as a null `value` does.

`field_test` checks a valueField leaf's rule side and returns its test: the evaluator calls it
for every such leaf and `checks.leaf_errors` when the rule is saved, as `operators.leaf_test`
for a leaf with a value.
"""

from django.db import models

from automation.conditions.coercion import base_field, coerce_value
from automation.conditions.comparisons import ORDERING, TEXT
from automation.conditions.operators import (
    compare_with,
    crossing_with,
    require_operator_applies,
)
from automation.conditions.tree import ConditionError, OperatorError
from automation.core.choices import (
    CHANGE_OPERATORS,
    CROSSING_OPERATORS,
    Operator,
    TriggerEvent,
    TriggerType,
)
from automation.core.registry import ResolvedPath, model_label

# The operators a leaf may use with a valueField.
VALUE_FIELD_OPERATORS = {
    Operator.EQUALS,
    Operator.NOT_EQUALS,
    *ORDERING,
    *TEXT,
    *CROSSING_OPERATORS,
}

_NO_VALUE_FIELD = {
    Operator.IS_NULL: "IS_NULL takes no value and no valueField.",
    Operator.IS_NOT_NULL: "IS_NOT_NULL takes no value and no valueField.",
    Operator.CHANGED: "CHANGED takes no value and no valueField.",
    Operator.IN: "IN compares with a list of values, not with another field: use EQUALS.",
    Operator.NOT_IN: (
        "NOT_IN compares with a list of values, not with another field: use NOT_EQUALS."
    ),
    Operator.REGEX: "REGEX compares with a pattern (checked when the rule is saved), not with "
    "another field.",
}


def is_updated_rule(rule) -> bool:
    return rule.trigger_type == TriggerType.EVENT and rule.trigger_event == TriggerEvent.UPDATED


def crossing_refusal(operator: Operator, rule) -> str | None:
    """Why a crossing cannot work on `rule`'s trigger, or None when it can."""
    if is_updated_rule(rule):
        return None
    message = (
        f"{operator} compares a field's value before the write with its value after it, which "
        "only the runs of UPDATED rules have."
    )
    if rule.trigger_event == TriggerEvent.CREATED:
        message += (
            " On CREATED every field was null before, so nothing crosses: use LESS_THAN or "
            "GREATER_THAN."
        )
    return message


def previous_errors(rule, operator: Operator, path: ResolvedPath | None) -> list[str]:
    """Why `previous: true` cannot be on this leaf ([] when it can); `path` None when the field
    path does not resolve (reported at the field)."""
    messages = []
    if operator in CHANGE_OPERATORS or operator in CROSSING_OPERATORS:
        messages.append(
            f"{operator} compares the values before and after the write itself: leave previous out."
        )
    if not is_updated_rule(rule):
        messages.append(
            "previous reads the record as it was before the write, which only the runs of "
            "UPDATED rules have: on CREATED every field was null, and deletions, schedules, "
            "webhooks and runs by hand have no write before them."
        )
    if path is not None and not path.is_local:
        messages.append(
            "previous reads the record's own fields only: the values related records had "
            "before the write are not kept."
        )
    return messages


def field_test(operator: Operator, path: ResolvedPath, other: ResolvedPath, previous: bool):
    """The test of a leaf that compares field `path` with field `other` (its valueField), its rule
    side checked first: OperatorError when the operator does not apply, ConditionError when the
    other field cannot be compared.

    Returns f(actual, other_value) -> bool, or for a crossing
    f(old, new, other_old, other_new) -> bool.
    """
    if operator not in VALUE_FIELD_OPERATORS:
        raise OperatorError(
            _NO_VALUE_FIELD.get(operator)
            or f"{operator} compares with a value, not with another field: use CHANGED and "
            "EQUALS with a valueField (previous: true reads the value before the write)."
        )
    if operator in CROSSING_OPERATORS and not path.is_local:
        raise OperatorError(
            f"{operator} applies to the record's own fields only: the values related records "
            "had before the write are not kept."
        )
    require_operator_applies(operator, path.field)
    if other.through_many:
        raise ConditionError(
            f'valueField reads one value, and "{other.path}" goes through a list of records.'
        )
    if (previous or operator in CROSSING_OPERATORS) and not other.is_local:
        reason = operator if operator in CROSSING_OPERATORS else "previous"
        raise ConditionError(
            f"With {reason}, valueField is a field of the record's own: its value before the "
            f'write is read too, and "{other.path}" is a related record\'s.'
        )
    mine, theirs = kind_of(path.field), kind_of(other.field)
    if mine != theirs:
        raise ConditionError(
            f'{path.field.name} is {mine} and valueField "{other.path}" is {theirs}: a field '
            "compares with a field of the same kind (numbers with numbers, dates with dates, "
            "date-times with date-times, text with text, true/false with true/false, a foreign "
            "key with a foreign key to the same model or that model's id)."
        )

    def other_of(value):
        return None if value is None else coerce_value(other.field, value)

    if operator in CROSSING_OPERATORS:

        def crossed(old, new, other_old, other_new) -> bool:
            test = crossing_with(operator, path.field, other_of(other_old), other_of(other_new))
            return test(old, new)

        return crossed
    return lambda actual, other_value: compare_with(operator, path.field, other_of(other_value))(
        actual
    )


def kind_of(model_field) -> str:
    """What a field holds, as far as comparing two fields goes (see field_test's message)."""
    if model_field.is_relation and model_field.concrete:
        return f"a reference to {model_label(model_field.related_model)}"
    if model_field.primary_key:
        return f"a reference to {model_label(model_field.model)}"
    base = base_field(model_field)
    if isinstance(base, models.BooleanField):
        return "true/false"
    if isinstance(base, models.IntegerField | models.DecimalField | models.FloatField):
        return "a number"
    if isinstance(base, models.DateTimeField):
        return "a date-time"
    if isinstance(base, models.DateField):
        return "a date"
    if isinstance(base, models.CharField | models.TextField):
        return "text"
    return f"a {base.get_internal_type()}"
