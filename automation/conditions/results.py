"""Conditions on the results of a run's earlier actions, in an action's `when`:
`results.0.status_code EQUALS 200`, `results.1 IS_NULL`.

An action's `when` is evaluated at its turn, so it can test what the actions before it gave. A
field path is `results`, the position of an earlier action, then keys or list indexes, dotted as
in templates (`results.0.record.stock`). Results are plain JSON, so they compare as a WEBHOOK
run's payload does (payload.py: JSON equality, numbers with numbers, text with text); a key a
result lacks reads null, and so does the result of an action that did not succeed (it failed,
or its own `when` skipped it): `results.0 IS_NOT_NULL` asks whether action 0 succeeded.

Only an action's `when` has results: a rule's conditions are evaluated before any action, and
an action's `when` may only name the actions before it.
"""

import re

from automation.conditions.payload import payload_test
from automation.conditions.tree import ConditionError, OperatorError
from automation.core.choices import OPERATORS, VALUELESS_OPERATORS, Operator

ROOT = "results"
SOURCE = ("an action's result", "the result")
_PATH = re.compile(r"results\.(\d{1,9})(?:\.[A-Za-z0-9_-]+)*")
ONLY_IN_WHEN = (
    "'results.N' is the result of an earlier action: only an action's `when` can test it (a "
    "rule's conditions are evaluated before any action)."
)


def is_results_path(field_path: str) -> bool:
    """Does the path name an earlier action's result? (A model field path has no dot.)"""
    return field_path.startswith(f"{ROOT}.")


def check_path(field_path: str, order: int | None) -> None:
    """ConditionError unless `field_path` names the result of an action before action `order`
    (None: not known, any position)."""
    match = _PATH.fullmatch(field_path)
    if match is None:
        raise ConditionError(
            f'"{field_path}" is not a result path: "results.", the position of an earlier '
            'action, then dotted keys or list indexes, e.g. "results.0.id".'
        )
    if order is None or int(match.group(1)) < order:
        return
    if order == 0:
        raise ConditionError(
            f'"{field_path}": the first action has no earlier action whose result it could test.'
        )
    raise ConditionError(
        f'"{field_path}": a `when` tests the results of earlier actions (here results.0 to '
        f"results.{order - 1})."
    )


def leaf_errors(field_path: str, operator, value, order: int) -> dict[str, list[str]]:
    """Save-time check of a condition of action `order`'s `when` on a result:
    {"field_name" | "operator" | "value": [messages]}, {} when it is valid."""
    try:
        check_path(field_path, order)
    except ConditionError as exc:
        return {"field_name": [str(exc)]}
    if operator not in OPERATORS:
        return {}  # the field's choices report it
    operator = Operator(operator)
    if operator in VALUELESS_OPERATORS and value is not None:
        return {"value": [f"{operator} takes no value: leave it out (or null)."]}
    try:
        payload_test(operator, value, SOURCE)
    except OperatorError as exc:
        return {"operator": [str(exc)]}
    except ConditionError as exc:
        return {"value": [str(exc)]}
    return {}


def read(results: dict, field_path: str):
    """The value at `field_path` in `results` ({action order: result}), None where there is
    nothing (an action that gave no result, a missing key)."""
    position, *keys = field_path.split(".")[1:]
    value = results.get(int(position))
    for key in keys:
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return None
        if value is None:
            return None
    return value
