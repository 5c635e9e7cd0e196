"""A leaf's entry in a run's condition trace (`conditionTrace`), bounded: texts longer than
TRACE_MAX_TEXT characters and lists longer than TRACE_MAX_VALUES are cut (saying how long they
were), so a trace stays small whatever the rule's values or the record hold.

An entry has `path`, `field`, `operator`, `expected`, `actual`, `passed` and `error`, and only
where they apply (older entries keep their shape): `resolved_expected` (what a relative value
stood for), `previous` (true: the leaf tested the record as it was before the write),
`value_field` (the field the leaf compared with; `expected` is then that field's value),
`actual_previous` and `expected_previous` (the values before the write, for leaves that read
them: `previous`, the crossings).
"""

import json

from automation.conditions.tree import LeafNode, Outcome

# A trace entry shows at most this many values of a list (a to-many leaf's related values, an IN
# list; the verdict uses all of them), and texts up to this many characters.
TRACE_MAX_VALUES = 20

TRACE_MAX_TEXT = 200

# An error message in a trace entry (it may quote the values it is about).
TRACE_MAX_ERROR = 1000


def leaf_entry(leaf: LeafNode, outcome: Outcome | None, passed: bool, error: str | None) -> dict:
    """The trace entry of `leaf`; `outcome` None when it could not be evaluated."""
    more = outcome.more if outcome is not None else {}
    expected = more.get("expected", None if leaf.value_field else leaf.value)
    entry = {
        "path": leaf.path,
        "field": leaf.field,
        "operator": leaf.operator,
        "expected": _shown(expected),
        "actual": _shown(outcome.actual if outcome is not None else None),
        "passed": passed,
        "error": error if error is None else _cut(error, TRACE_MAX_ERROR),
    }
    if outcome is not None and outcome.resolved is not None:
        entry["resolved_expected"] = _shown(outcome.resolved)
    if leaf.previous:
        entry["previous"] = True
    if leaf.value_field:
        entry["value_field"] = leaf.value_field
    for key in ("actual_previous", "expected_previous"):
        if key in more:
            entry[key] = _shown(more[key])
    return entry


def _shown(value, nested: bool = False):
    """`value` (JSON) as a trace entry shows it: texts and lists cut, saying how long they were.

    A list or object inside a list or object is shown as its JSON text, cut the same way.
    """
    if isinstance(value, str):
        return _cut(value, TRACE_MAX_TEXT)
    if nested and isinstance(value, list | dict):
        try:
            text = json.dumps(value)
        except (TypeError, ValueError, RecursionError):
            text = repr(type(value))
        return value if len(text) <= TRACE_MAX_TEXT else _cut(text, TRACE_MAX_TEXT)
    if isinstance(value, list):
        shown = [_shown(item, nested=True) for item in value[:TRACE_MAX_VALUES]]
        if len(value) > TRACE_MAX_VALUES:
            shown.append(f"... {len(value) - TRACE_MAX_VALUES} more ({len(value)} in all)")
        return shown
    if isinstance(value, dict):
        items = list(value.items())
        shown = {
            _cut(str(key), TRACE_MAX_TEXT): _shown(item, nested=True)
            for key, item in items[:TRACE_MAX_VALUES]
        }
        if len(items) > TRACE_MAX_VALUES:
            shown["..."] = f"{len(items) - TRACE_MAX_VALUES} more ({len(items)} in all)"
        return shown
    return value


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"
