"""What a dry run simulates: the event it stands for, and the `changes` and `record` it is given.

A dry run of an EVENT rule is judged as a run of the rule's event would be: its `event` is the
rule's trigger event, so CHANGED, CHANGED_FROM and CHANGED_TO evaluate as they would on a real
save, and templates read the same `event` and `changes`. What it may be given
(runRule(dryRun: true, changes:, record:)):

- `changes` ({"field": {"old": .., "new": ..}}): only for an UPDATED rule, since only an update
  carries changes that are not derived from the record (on CREATED every set field changed from
  null; a deletion has none). The record then holds the `new` values, as it would after the save.
- `record` ({"field": value}): overrides fields of the stored record's snapshot (with `objectId`)
  or, without `objectId`, is the whole simulated record: a record that was never stored, whose
  id is null and whose other fields are those given (a condition or template reading a field
  left out says the field is missing). A field that is in `changes` too must hold its `new` value.

Both are checked like the values of a real record: each key a field of the rule's model stored
on its own row (foreign keys by id), each value of the field's type (the coercion conditions
use), a choice one of the field's choices, null only where the field may be null. They are
stored in snapshot form (decimals as strings, datetimes as ISO 8601), so the simulated run sees
exactly what a real one would. Errors are a ValidationError keyed `changes.<field>.old` /
`changes.<field>.new` / `record.<field>`, before anything is written.
"""

from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.db import models

from automation.conditions.coercion import coerce_value
from automation.conditions.tree import ConditionError
from automation.core.choices import TriggerEvent, TriggerType
from automation.core.snapshots import diff, json_value, local_fields

CHANGE_SIDES = ("old", "new")
# A simulated value of a JSON field nests at most this deep (as action parameters do).
MAX_JSON_DEPTH = 20


@dataclass
class Simulation:
    """What a dry run is created with."""

    event: str | None
    object_snapshot: dict | None
    changes: dict | None
    given: list[str] = field(default_factory=list)  # the simulated inputs, for the log's context
    refusal: str | None = None  # why a real event like this would not fire the rule at all


def refuse_on_a_real_run(changes, record) -> None:
    """`changes` and `record` only make sense in a dry run: a real run reads the stored record."""
    errors = {
        name: [f"Only a dry run (dryRun: true) takes a simulated {name}."]
        for name, value in (("changes", changes), ("record", record))
        if value is not None
    }
    if errors:
        raise ValidationError(errors)


def simulate(rule, stored_snapshot: dict | None, *, changes=None, record=None) -> Simulation:
    """The event, record and changes of a dry run of `rule` (see the module docstring).

    `stored_snapshot`: the snapshot of the record named by objectId, or None.
    """
    event = rule.trigger_event if rule.trigger_type == TriggerType.EVENT else None
    fields = _fields_of(rule)
    errors: dict[str, list[str]] = {}
    checked_changes = _checked_changes(rule, event, fields, changes, errors)
    checked_record = _checked_record(rule, fields, record, errors)
    for name, value in (checked_record or {}).items():
        change = (checked_changes or {}).get(name)
        if change is not None and change["new"] != value:
            errors[f"record.{name}"] = [
                "After an update the record holds the new value: "
                f"changes.{name}.new is {change['new'].shown!r}."
            ]
    if errors:
        raise ValidationError(errors)
    checked_changes = _shown(checked_changes)
    checked_record = _shown(checked_record)

    object_snapshot = stored_snapshot
    if object_snapshot is None and checked_record is not None:
        pk_name = rule.content_type.model_class()._meta.pk.name
        object_snapshot = {pk_name: None}  # a record never stored
    if object_snapshot is not None:
        object_snapshot = dict(object_snapshot)
        for name, change in (checked_changes or {}).items():
            object_snapshot[name] = change["new"]
        object_snapshot.update(checked_record or {})

    simulated_changes = checked_changes
    if event == TriggerEvent.CREATED:
        # As the outbox records a creation: every field set, changed from null.
        simulated_changes = diff(None, object_snapshot)
    return Simulation(
        event=event,
        object_snapshot=object_snapshot,
        changes=simulated_changes,
        given=[
            name for name, value in (("changes", changes), ("record", record)) if value is not None
        ],
        refusal=_not_fired(rule, event, checked_changes),
    )


def _fields_of(rule) -> dict:
    """The fields a simulated record or change may name: the model's readable fields stored on
    its own row, the primary key excepted (a record's id is objectId's)."""
    if rule.content_type_id is None:
        return {}
    model = rule.content_type.model_class()
    return {f.name: f for f in local_fields(model) if not f.primary_key}


def _checked_changes(rule, event, fields, changes, errors) -> dict | None:
    if changes is None:
        return None
    refusal = _changes_refusal(rule, event)
    if refusal:
        errors["changes"] = [refusal]
        return None
    if not isinstance(changes, dict):
        errors["changes"] = ['Expected an object: {"field": {"old": .., "new": ..}}.']
        return None
    if _more_than_the_model_has(rule, fields, changes, "changes", errors):
        return None
    checked = {}
    for name, change in changes.items():
        path = f"changes.{name}"
        model_field = _known_field(rule, fields, name, path, errors)
        if model_field is None:
            continue
        if not isinstance(change, dict) or set(change) != set(CHANGE_SIDES):
            errors[path] = ['Expected {"old": .., "new": ..}, both given (null for no value).']
            continue
        sides = {}
        for side in CHANGE_SIDES:
            try:
                sides[side] = _checked_value(model_field, change[side])
            except ValueError as exc:
                errors[f"{path}.{side}"] = [str(exc)]
        if len(sides) == len(CHANGE_SIDES):
            if sides["old"] == sides["new"]:
                errors[path] = ["old and new are equal: a field that did not change has no entry."]
            else:
                checked[name] = sides
    return checked


def _changes_refusal(rule, event) -> str | None:
    """Why this rule's runs never carry changes of their own (None when they do)."""
    if rule.trigger_type != TriggerType.EVENT:
        return (
            f"Only EVENT rules see changes; this is a {rule.trigger_type} rule, whose runs have "
            "none."
        )
    if event == TriggerEvent.CREATED:
        return (
            "A CREATED event's changes are the record's fields, each changed from null: give "
            "them in record."
        )
    if event == TriggerEvent.DELETED:
        return "A DELETED event carries no changes."
    return None


def _checked_record(rule, fields, record, errors) -> dict | None:
    if record is None:
        return None
    if rule.content_type_id is None:
        errors["record"] = ["This rule has no model, so it takes no record."]
        return None
    if not isinstance(record, dict):
        errors["record"] = ['Expected an object: {"field": value}.']
        return None
    if _more_than_the_model_has(rule, fields, record, "record", errors):
        return None
    checked = {}
    for name, value in record.items():
        path = f"record.{name}"
        model_field = _known_field(rule, fields, name, path, errors)
        if model_field is None:
            continue
        try:
            checked[name] = _checked_value(model_field, value)
        except ValueError as exc:
            errors[path] = [str(exc)]
    return checked


def _more_than_the_model_has(rule, fields, given: dict, path: str, errors) -> bool:
    """More entries than the model has fields: refused whole (not with one error per entry)."""
    if len(given) <= len(fields):
        return False
    errors[path] = [f"{len(given)} fields given; {rule.model} has {len(fields)} a run reads."]
    return True


def _known_field(rule, fields, name, path, errors):
    model_field = fields.get(name)
    if model_field is None:
        model = rule.content_type.model_class()
        if name == model._meta.pk.name:
            errors[path] = ["The record's id is not simulated: give objectId for a stored record."]
        else:
            errors[path] = [
                f'"{name}" is not a field of {rule.model} a run reads: expected one of '
                f"{', '.join(sorted(fields))}."
            ]
    return model_field


@dataclass(frozen=True)
class _Value:
    """A checked value: as its field's type (compared), and as a snapshot holds it (shown)."""

    typed: object

    @property
    def shown(self):
        return json_value(self.typed)


def _checked_value(model_field, value) -> _Value:
    """`value` as its field's type; ValueError saying why it is not one.

    Lists and objects only for a JSON field, and at most MAX_JSON_DEPTH deep: anything else is
    refused before it is read (or echoed in a message) by recursive code.
    """
    if value is None:
        if not model_field.null:
            raise ValueError(f"{model_field.name} cannot be null.")
        return _Value(None)
    if isinstance(value, dict | list):
        if not isinstance(model_field, models.JSONField):
            raise ValueError(f"{model_field.name} takes a single value, not a list or object.")
        if not _within_depth(value, MAX_JSON_DEPTH):
            raise ValueError(f"{model_field.name} nests deeper than {MAX_JSON_DEPTH} levels.")
    max_length = getattr(model_field, "max_length", None)
    if isinstance(value, str) and max_length is not None and len(value) > max_length:
        raise ValueError(
            f"{model_field.name} holds at most {max_length} characters, not {len(value)}."
        )
    try:
        typed = coerce_value(model_field, value)
    except ConditionError as exc:
        raise ValueError(str(exc)) from None
    if model_field.choices:
        valid = [key for key, _label in model_field.flatchoices]
        if typed not in valid:
            raise ValueError(
                f'"{value}" is not a choice of {model_field.name} ({", ".join(map(str, valid))}).'
            )
    return _Value(typed)


def _within_depth(value, limit: int) -> bool:
    """Is `value` nested at most `limit` levels deep? (Walked without recursion.)"""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return True


def _shown(checked: dict | None) -> dict | None:
    """Checked values (nested in changes' sides) in snapshot form."""
    if checked is None:
        return None
    return {
        name: (
            {side: v.shown for side, v in value.items()} if isinstance(value, dict) else value.shown
        )
        for name, value in checked.items()
    }


def _not_fired(rule, event, changes) -> str | None:
    """An UPDATED rule with watched fields fires only when one of them changed (as the outbox
    decides): simulated changes that touch none of them would not run the rule at all."""
    if event != TriggerEvent.UPDATED or changes is None or not rule.watched_fields:
        return None
    if any(name in changes for name in rule.watched_fields):
        return None
    return (
        f"Not fired: the rule watches {', '.join(rule.watched_fields)}, and these changes touch "
        "none of them, so a real update like this would not run it."
    )
