"""The save-time check of one condition (RuleCondition.clean, through the rule service): the same
checks every run of the rule makes (`operators.leaf_test`, `sides.field_test`,
`payload.payload_test`) plus what the rule's trigger allows, every mistake of the leaf reported
at once, each at its part of the input."""

from automation.conditions import operators, payload, results, sides
from automation.conditions.tree import Clock, ConditionError, OperatorError
from automation.core.choices import (
    CHANGE_OPERATORS,
    CROSSING_OPERATORS,
    OPERATORS,
    VALUELESS_OPERATORS,
    Operator,
    TriggerEvent,
    TriggerType,
)
from automation.core.registry import PathError, resolve_path


def leaf_errors(
    rule,
    field_path,
    operator,
    value,
    *,
    previous: bool = False,
    value_field: str = "",
    action_order: int | None = None,
) -> dict[str, list[str]]:
    """Save-time check of one condition of `rule`: {"field_name" | "operator" | "value" |
    "previous" | "value_field": [messages]}, {} when it is valid. `action_order`: the position
    of the action whose `when` holds the condition (None: the rule's conditions), which may test
    earlier actions' results (results.py).

    The rule's side is checked as every run of the rule would check it, against the current time
    (relative dates are resolved, so one that leaves the calendar is refused). A mistake does not
    hide the others: an operator the trigger refuses still has its value checked.
    """
    if results.is_results_path(field_path):
        if action_order is None:
            return {"field_name": [results.ONLY_IN_WHEN]}
        errors = results.leaf_errors(field_path, operator, value, action_order)
        if previous:
            _add(errors, "previous", "A result has no value before the write: leave previous out.")
        if value_field:
            _add(errors, "value_field", "A result is compared with a value, not a valueField.")
        return errors
    errors: dict[str, list[str]] = {}
    if operator not in OPERATORS:
        return errors  # the field's choices report it
    operator = Operator(operator)
    _add(errors, "operator", trigger_refusal(operator, rule))
    is_payload = rule.trigger_type == TriggerType.WEBHOOK or payload.is_payload_path(field_path)
    if is_payload:
        found = payload.leaf_errors(rule, field_path, operator, value)
        if "operator" in errors:  # the trigger's refusal says it for records and payloads
            found.pop("operator", None)
        errors = _merged(errors, found)
        if previous:
            _add(errors, "previous", "A payload has no value before the write: leave previous out.")
        if value_field:
            _add(
                errors,
                "value_field",
                "valueField names a field of the rule's model; a payload "
                "condition compares with a value.",
            )
        return errors
    path = None
    if not rule.content_type_id:
        if not rule.refused_model:  # else the model's own error says it
            _add(errors, "field_name", "This rule has no model, so it has no fields to test.")
    else:
        try:
            path = resolve_path(rule.model, field_path)
        except (PathError, LookupError) as exc:
            _add(errors, "field_name", str(exc))
    if previous:
        for message in sides.previous_errors(rule, operator, path):
            _add(errors, "previous", message)
    if not rule.content_type_id:
        return errors
    if value_field:
        return _merged(
            errors, _value_field_errors(rule, operator, path, value, value_field, previous)
        )
    if path is None:
        return errors
    if operator in VALUELESS_OPERATORS and value is not None:
        # A run ignores it; an author who gave one meant something else (EQUALS, CHANGED_TO).
        _add(errors, "value", f"{operator} takes no value: leave it out (or null).")
        return errors
    try:
        operators.leaf_test(operator, path, value, Clock.of(rule))
    except OperatorError as exc:
        _add(errors, "operator", str(exc))
    except ConditionError as exc:
        _add(errors, "value", str(exc))
    return errors


def _value_field_errors(rule, operator, path, value, value_field, previous) -> dict:
    """The mistakes of a leaf that compares with another field (sides.field_test)."""
    errors: dict[str, list[str]] = {}
    if value is not None:
        _add(errors, "value", "Give a value or a valueField, not both.")
    try:
        other = resolve_path(rule.model, value_field)
    except (PathError, LookupError) as exc:
        _add(errors, "value_field", str(exc))
        return errors
    if path is not None:
        try:
            sides.field_test(operator, path, other, previous)
        except OperatorError as exc:
            _add(errors, "operator", str(exc))
        except ConditionError as exc:
            _add(errors, "value_field", str(exc))
    return errors


def trigger_refusal(operator: Operator, rule) -> str | None:
    """Why an operator that reads the write's changes cannot work on `rule`'s trigger, or None
    when it can (or the operator reads no changes)."""
    if operator in CROSSING_OPERATORS:
        return sides.crossing_refusal(operator, rule)
    if operator not in CHANGE_OPERATORS:
        return None
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


def _add(errors: dict, key: str, message: str | None) -> None:
    if message and message not in errors.get(key, ()):
        errors.setdefault(key, []).append(message)


def _merged(errors: dict, more: dict) -> dict:
    for key, messages in more.items():
        for message in messages:
            _add(errors, key, message)
    return errors
