"""Conditions on a WEBHOOK run's payload: `payload.order.total GREATER_THAN 100`.

A WEBHOOK rule has no model, so its conditions test the JSON object it was sent. A field path is
`payload` and one or more keys or list indexes, dotted (`payload.items.0.sku`); keys are letters,
digits, `_` and `-`, as in templates. There is no model field to coerce values to, so values keep
their JSON types:

- A key the payload lacks (or a path through a value that is not an object or a list) reads
  null, so IS_NULL / IS_NOT_NULL test for a key; as with records, a null actual value passes only
  IS_NULL, EQUALS null and NOT_EQUALS a value.
- EQUALS, NOT_EQUALS, IN and NOT_IN compare single values (text, a number, true/false, null) by
  JSON equality: numbers by value (`1` equals `1.0`), text exactly, `true` is not `1`, and "7" is
  not 7. A list or object in the payload equals no single value.
- The orderings compare numbers with numbers and text with text (by code point); the text
  operators and REGEX apply to text. A payload value of another type is an error of the condition
  (it fails closed, saying so), as a record's value that does not convert is.
- CHANGED operators, the crossings and relative dates do not apply: a payload has no previous
  version, and its dates are text.

The rule side is checked by `payload_test`, which the evaluator calls for every leaf and
`leaf_errors` when the rule is saved, like operators.leaf_test for record fields.
"""

import decimal
import json
import re

from automation.conditions.comparisons import ORDERING, TEXT, json_type, regex_test
from automation.conditions.tree import ConditionError, OperatorError
from automation.core.choices import (
    CHANGE_OPERATORS,
    CROSSING_OPERATORS,
    LIST_OPERATORS,
    VALUELESS_OPERATORS,
    Operator,
    TriggerType,
)

ROOT = "payload"
_PATH = re.compile(r"payload(?:\.[A-Za-z0-9_-]+)+")
PATH_FORM = (
    '"payload." and dotted keys or list indexes (letters, digits, _ and -), e.g. '
    '"payload.order.total" or "payload.items.0.sku"'
)


def is_payload_path(field_path: str) -> bool:
    """Does the path name the payload? (A model may have a field named "payload": a path to it
    has no dot.)"""
    return field_path.startswith(f"{ROOT}.")


def leaf_errors(rule, field_path: str, operator: Operator, value) -> dict[str, list[str]]:
    """Save-time check of a condition of `rule` that is a WEBHOOK rule's or names the payload:
    {"field_name" | "operator" | "value": [messages]}, {} when it is valid."""
    if rule.trigger_type != TriggerType.WEBHOOK:
        return {
            "field_name": [
                "Only the runs of WEBHOOK rules have a payload; this rule's conditions test "
                "its model's fields."
            ]
        }
    try:
        check_path(field_path)
    except ConditionError as exc:
        return {"field_name": [str(exc)]}
    if operator in VALUELESS_OPERATORS and value is not None:
        return {"value": [f"{operator} takes no value: leave it out (or null)."]}
    try:
        payload_test(operator, value)
    except OperatorError as exc:
        return {"operator": [str(exc)]}
    except ConditionError as exc:
        return {"value": [str(exc)]}
    return {}


def check_path(field_path: str) -> None:
    if not _PATH.fullmatch(field_path):
        raise ConditionError(
            f'"{field_path}" is not a payload path: a WEBHOOK rule has no model, so its '
            f"conditions test the JSON it was sent, {PATH_FORM}."
        )


def read(payload, field_path: str):
    """The value at `field_path` ("payload.a.b"), None where the payload has nothing there."""
    value = payload
    for part in field_path.split(".")[1:]:
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
        if value is None:
            return None
    return value


# How messages name the JSON a leaf reads: (with "a", with "the"). conditions/results.py tests
# earlier actions' results with the same comparisons.
PAYLOAD_SOURCE = ("a payload", "the payload")


def payload_test(operator: Operator, expected, source: tuple[str, str] = PAYLOAD_SOURCE):
    """A function actual -> bool for `operator` on a payload value, the expected value checked
    first (ConditionError; OperatorError when the operator does not apply to a payload)."""
    if operator in CHANGE_OPERATORS or operator in CROSSING_OPERATORS:
        raise OperatorError(
            f"{operator} does not apply to {source[0]}: it has no previous version."
        )
    if operator == Operator.IS_NULL:
        return lambda actual: actual is None
    if operator == Operator.IS_NOT_NULL:
        return lambda actual: actual is not None
    if operator in (Operator.EQUALS, Operator.NOT_EQUALS):
        wanted = _single(expected, operator)
        if operator == Operator.EQUALS:
            return lambda actual: _same(actual, wanted)
        return lambda actual: not _same(actual, wanted)
    if operator in LIST_OPERATORS:
        if not isinstance(expected, list):
            raise ConditionError(f"{operator} needs a list of values.")
        wanted = [_single(item, operator) for item in expected if item is not None]
        if operator == Operator.IN:
            return lambda actual: actual is not None and any(_same(actual, w) for w in wanted)
        return lambda actual: actual is not None and not any(_same(actual, w) for w in wanted)
    if expected is None:
        raise ConditionError(f"{operator} needs a value.")
    if operator in ORDERING:
        return _ordering(operator, expected, source)
    if not isinstance(expected, str):
        raise ConditionError(f"{operator} needs a text value, not {json_type(expected)}.")

    def text_of(actual) -> str:
        if not isinstance(actual, str):
            raise ConditionError(f"{operator} applies to text; {source[1]} holds {_shown(actual)}.")
        return actual

    if operator == Operator.REGEX:
        return regex_test(expected, text_of)
    test = TEXT[operator]
    return lambda actual: actual is not None and test(text_of(actual), expected)


def _ordering(operator: Operator, expected, source: tuple[str, str]):
    if _is_number(expected):
        wanted, kind = _number(expected), "a number"
    elif isinstance(expected, str):
        wanted, kind = expected, "text"
    else:
        raise ConditionError(f"{operator} compares numbers or text, not {json_type(expected)}.")
    test = ORDERING[operator]

    def compare(actual) -> bool:
        if actual is None:
            return False
        if kind == "text" and isinstance(actual, str):
            return test(actual, wanted)
        if kind == "a number" and _is_number(actual):
            return test(_number(actual), wanted)
        raise ConditionError(
            f"{operator} {kind} cannot be compared with {_shown(actual)} from {source[1]}."
        )

    return compare


def _single(value, operator):
    if isinstance(value, dict | list):
        raise ConditionError(
            f"{operator} compares single values (text, a number, true/false, null), "
            f"not {json_type(value)}."
        )
    return value


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(value) -> decimal.Decimal:
    # str() keeps a float's short form: 0.1 compares as 0.1, not 0.1000000000000000055...
    return decimal.Decimal(str(value))


def _same(actual, wanted) -> bool:
    """JSON equality of two single values: numbers by value, true/false not numbers."""
    if _is_number(actual) and _is_number(wanted):
        return _number(actual) == _number(wanted)
    if isinstance(actual, dict | list):
        return False
    return type(actual) is type(wanted) and actual == wanted


def _shown(value) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    if len(text) > 50:
        text = f"{text[:50]}..."
    return f"{json_type(value)} ({text})"
