"""CREATE_RECORD, UPDATE_RECORD and DELETE_RECORD: records of automatable models of the run's
organization, written through save()/delete() so signals fire, each write counted first."""

import logging

from django.core.exceptions import NON_FIELD_ERRORS, FieldDoesNotExist, ValidationError
from django.db import models, transaction

from accounts.validation import full_clean_changes
from automation.actions import record_lookup
from automation.actions.base import (
    TRIGGER,
    ActionError,
    ActionHandler,
    add_message,
    has_error,
    is_json_field,
    join_path,
    parameters_schema_of,
    render_parameter,
    template_errors,
)
from automation.actions.template_types import fill_refusal
from automation.actions.templates import has_placeholder, placeholder_kind
from automation.core.choices import ActionType
from automation.core.registry import (
    PathError,
    did_you_mean,
    get_automatable,
    name_field_of,
    organization_lookup_for,
    resolve_path,
)
from automation.core.snapshots import json_value, snapshot
from automation.fanout import budget
from automation.fanout.chain import current_chain
from automation.index.watching import remember_stored_row

logger = logging.getLogger("automation.actions.records")


_TARGET_SCHEMA = {
    "description": 'The record to act on: "trigger" (default) or {"model", "lookup"}.',
    "anyOf": [
        {"const": TRIGGER},
        {
            "type": "object",
            "properties": {
                "model": {"type": "string", "minLength": 1},
                "lookup": {"type": "object", "minProperties": 1},
            },
            "required": ["model", "lookup"],
            "additionalProperties": False,
        },
    ],
}

_FIELDS_SCHEMA = {
    "description": "Field name -> value (templates allowed); choices by enum name, foreign keys "
    "by related id.",
    "type": "object",
    "minProperties": 1,
}

_TARGET_MESSAGE = 'Expected "trigger" or {"model": "app_label.model", "lookup": {"field": value}}.'


class RecordHandler(ActionHandler):
    """Shared by the three database actions: target resolution, field checks, value coercion."""

    schema_messages = {"target": _TARGET_MESSAGE}

    # Save time ------------------------------------------------------------------------------

    def check_target(self, target, rule, errors, scope) -> str | None:
        """The target's model label when it is valid (errors added otherwise)."""
        if target == TRIGGER:
            label = rule.model if rule is not None else None
            if label is None and not getattr(rule, "refused_model", None):
                add_message(
                    errors,
                    "target",
                    'This rule has no model, so there is no triggering record: name a "model" '
                    'and a "lookup".',
                )
            return label
        label = self.check_model(target["model"], "target.model", errors)
        for name, value in target["lookup"].items():
            path = join_path("target.lookup", name)
            if label is not None:
                self._check_lookup(label, name, value, path, errors)
            if not _is_scalar(value):
                add_message(errors, path, "A lookup value is a single value.")
            template_errors(value, path, errors, scope)
        return label

    @staticmethod
    def _check_lookup(label, name, value, path, errors) -> None:
        """A lookup names a local field; a literal value must coerce to it as the run will."""
        try:
            resolved = resolve_path(label, name)
        except PathError as exc:
            add_message(errors, path, str(exc))
            return
        if not resolved.is_local:
            add_message(errors, path, "A lookup uses the model's own fields only.")
        elif _is_scalar(value) and not has_placeholder(value):
            try:
                _lookup_value(resolved.field, value, path)
            except ActionError as exc:
                add_message(errors, path, str(exc).removeprefix(f"{path}: "))

    def check_model(self, label, path, errors) -> str | None:
        try:
            entry = get_automatable(label)
        except LookupError as exc:
            add_message(errors, path, str(exc))
            return None
        return entry.label

    def check_fields(self, label, fields: dict, errors, rule, scope) -> None:
        entry = get_automatable(label)
        for name, value in fields.items():
            path = join_path("fields", name)
            if name not in entry.writable:
                hint = did_you_mean(name, entry.writable)
                add_message(errors, path, f'"{name}" is not a writable field of {label}.{hint}')
                continue
            known = len(errors.get(path, ()))
            template_errors(value, path, errors, scope)
            field = entry.field(name)
            if field.is_relation and organization_lookup_for(field.related_model) is None:
                add_message(errors, path, f'"{name}" points to records automation cannot check.')
            elif not is_json_field(field) and not _is_scalar(value):
                add_message(errors, path, f'"{name}" takes a single value, not a list or object.')
            elif has_placeholder(value):
                # What a placeholder gives is checked at run time, and here when it is known.
                if len(errors.get(path, ())) == known:
                    self._check_placeholder_kind(field, value, path, errors, scope)
            elif field.is_relation:
                try:
                    _related_record(field, value, rule.organization_id, path)
                except ActionError as exc:
                    add_message(errors, path, str(exc).removeprefix(f"{path}: "))
            else:
                for message in literal_value_errors(field, value):
                    add_message(errors, path, message)

    @staticmethod
    def _check_placeholder_kind(field, value, path, errors, scope) -> None:
        """A value that is one placeholder keeps its JSON type: refuse one whose kind the field
        can never take (`stock: "{{ object.name }}"`), as the write would on every run."""
        kind = placeholder_kind(value, scope)
        refusal = fill_refusal(field, kind) if kind is not None else None
        if refusal:
            add_message(errors, path, f"'{value.strip()}' {refusal}")

    # Run time -------------------------------------------------------------------------------

    def find_target(self, parameters, ctx, *, lock: bool):
        """The record to act on, of the rule's organization only. ActionError when none."""
        target = parameters.get("target", TRIGGER)
        if target == TRIGGER:
            if not ctx.model or ctx.object_id is None:
                raise ActionError('target "trigger": this run has no triggering record.')
            entry = _automatable_or_fail(ctx.model, "target")
            described = f"{entry.label} {ctx.object_id}"
            found = record_lookup.trigger_records(
                entry, ctx.organization_id, ctx.object_id, lock=_can_lock(lock)
            )
            return entry, _one(found, described)
        entry = _automatable_or_fail(target["model"], "target.model")
        lookup = render_parameter(target["lookup"], ctx, "target.lookup")
        filters = {}
        for name, value in lookup.items():
            path = join_path("target.lookup", name)
            try:
                resolved = resolve_path(entry.label, name)
            except PathError as exc:
                raise ActionError(f"{path}: {exc}") from None
            if not resolved.is_local:
                raise ActionError(f"{path}: a lookup uses the model's own fields only.")
            filters[resolved.field.attname] = _lookup_value(resolved.field, value, path)
        described = f"{entry.label} where {lookup}"
        found = record_lookup.queryset(entry, ctx.organization_id, filters, lock=_can_lock(lock))
        return entry, _one(list(found), described)

    def spend_write(self, ctx) -> None:
        """Count the write about to happen against the run's fan-out budgets (budget.py); over
        one, the action fails with the reason before writing."""
        chain = current_chain()
        refusal = budget.admit_write(ctx.organization_id, chain.root_log_id if chain else None)
        if refusal:
            raise ActionError(refusal)

    def spend_write_and_bytes(self, ctx, instance) -> None:
        """Count the write about to happen and the record it stores, twice (the row, and its
        snapshot in the action's result), against the fan-out and byte budgets, in one round
        trip (budget.py); over one, the action fails with the reason before writing."""
        chain = current_chain()
        refusal = budget.admit_write_with_bytes(
            ctx.organization_id,
            chain.root_log_id if chain else None,
            2 * budget.stored_size(snapshot(instance)),
        )
        if refusal:
            raise ActionError(refusal)

    def assign_fields(self, entry, instance, fields: dict, ctx) -> None:
        """Set rendered field values on `instance` and validate it with the model's own rules."""
        for name, value in fields.items():
            path = join_path("fields", name)
            if name not in entry.writable:
                raise ActionError(f'{path}: "{name}" is not a writable field of {entry.label}.')
            field = entry.field(name)
            if field.is_relation:
                record = _related_record(field, value, ctx.organization_id, path)
                setattr(instance, field.name, record)
            else:
                if not is_json_field(field) and not _is_scalar(value):
                    raise ActionError(f'{path}: "{name}" takes a single value, got {value!r}.')
                try:
                    setattr(instance, field.attname, _field_input(field, value))
                except ValidationError as exc:
                    raise ActionError(f"{path}: {' '.join(exc.messages)}") from None
        try:
            full_clean_changes(instance, fields)
        except ValidationError as exc:
            raise ActionError(_validation_message(exc, entry)) from None


class UpdateRecordHandler(RecordHandler):
    action_type = ActionType.UPDATE_RECORD
    parameters_schema = parameters_schema_of(
        {"target": _TARGET_SCHEMA, "fields": _FIELDS_SCHEMA},
        ["fields"],
        "Update the triggering record, or the one record a lookup finds, in the rule's "
        "organization.",
    )

    def check(self, parameters, rule, errors, scope):
        if has_error(errors, "target"):
            return  # which record, and so which fields, is not known
        label = self.check_target(parameters.get("target", TRIGGER), rule, errors, scope)
        if label is not None and "fields" in parameters:
            self.check_fields(label, parameters["fields"], errors, rule, scope)

    def _prepare(self, parameters, ctx, *, lock):
        entry, instance = self.find_target(parameters, ctx, lock=lock)
        if lock:
            remember_stored_row(instance)
        fields = render_parameter(parameters["fields"], ctx, "fields")
        self.assign_fields(entry, instance, fields, ctx)
        return entry, instance, fields

    def execute(self, parameters, ctx, *, on_attempt=None):
        entry, instance, fields = self._prepare(parameters, ctx, lock=True)
        self.spend_write_and_bytes(ctx, instance)
        instance.save()
        return {
            "model": entry.label,
            "id": json_value(instance.pk),
            "updated": sorted(fields),
            "record": snapshot(instance),
        }

    def dry_run(self, parameters, ctx):
        entry, instance, fields = self._prepare(parameters, ctx, lock=False)
        return {
            "would": "update",
            "model": entry.label,
            "id": json_value(instance.pk),
            "fields": fields,
        }


class CreateRecordHandler(RecordHandler):
    action_type = ActionType.CREATE_RECORD
    parameters_schema = parameters_schema_of(
        {"model": {"type": "string", "minLength": 1}, "fields": _FIELDS_SCHEMA},
        ["model", "fields"],
        "Create a record of an automatable model in the rule's organization.",
    )

    def check(self, parameters, rule, errors, scope):
        if "model" not in parameters:
            return  # its schema error is reported; the fields cannot be checked without it
        label = self.check_model(parameters["model"], "model", errors)
        if label is not None and "fields" in parameters:
            self.check_fields(label, parameters["fields"], errors, rule, scope)
            entry = get_automatable(label)
            if not entry.owns_organization and entry.owner_field not in parameters["fields"]:
                add_message(
                    errors,
                    join_path("fields", entry.owner_field),
                    f"Required: a {label} belongs to an organization through "
                    f'"{entry.owner_field}".',
                )

    def _prepare(self, parameters, ctx):
        entry = _automatable_or_fail(parameters["model"], "model")
        fields = render_parameter(parameters["fields"], ctx, "fields")
        if entry.owns_organization:
            instance = entry.model(organization_id=ctx.organization_id)
        else:
            instance = entry.model()
        self.assign_fields(entry, instance, fields, ctx)
        if entry.organization_id_of(instance) != ctx.organization_id:
            # Owned through a relation the fields did not set (assign_fields checked that any
            # related record they name is of this organization).
            raise ActionError(
                f"fields.{entry.owner_field}: required: a {entry.label} belongs to an "
                f'organization through "{entry.owner_field}".'
            )
        return entry, instance, fields

    def execute(self, parameters, ctx, *, on_attempt=None):
        entry, instance, _fields = self._prepare(parameters, ctx)
        self.spend_write_and_bytes(ctx, instance)
        instance.save()
        return {"model": entry.label, "id": json_value(instance.pk), "record": snapshot(instance)}

    def dry_run(self, parameters, ctx):
        entry, _instance, fields = self._prepare(parameters, ctx)
        # No id: nothing is created. A later action reading "results.N.id" sees null.
        return {"would": "create", "model": entry.label, "id": None, "fields": fields}


class DeleteRecordHandler(RecordHandler):
    action_type = ActionType.DELETE_RECORD
    parameters_schema = parameters_schema_of(
        {"target": _TARGET_SCHEMA},
        [],
        "Delete the triggering record, or the one record a lookup finds, in the rule's "
        "organization.",
    )

    def check(self, parameters, rule, errors, scope):
        if not has_error(errors, "target"):
            self.check_target(parameters.get("target", TRIGGER), rule, errors, scope)

    def execute(self, parameters, ctx, *, on_attempt=None):
        entry, instance = self.find_target(parameters, ctx, lock=True)
        pk = json_value(instance.pk)
        self.spend_write(ctx)
        instance.delete()
        return {"model": entry.label, "id": pk, "deleted": True}

    def dry_run(self, parameters, ctx):
        entry, instance = self.find_target(parameters, ctx, lock=False)
        return {"would": "delete", "model": entry.label, "id": json_value(instance.pk)}


def literal_value_errors(field, value) -> list[str]:
    """Why a literal value cannot be written to a (non-relation) field: the field's own
    `clean()` (to_python, choices, null and blank, validators), which a run's full_clean applies
    to the same value; [] when it can."""
    try:
        field.clean(_field_input(field, value), None)
    except ValidationError as exc:
        return field_messages(field, exc.error_list)
    return []


def field_messages(field, errors: list[ValidationError]) -> list[str]:
    """The messages of a field's errors, where a bad choice lists the choices (Django's own
    message says only that it is not one)."""
    messages = []
    for error in errors:
        if error.code == "invalid_choice" and field is not None and field.choices:
            choices = ", ".join(str(key) for key, _label in field.flatchoices)
            value = (error.params or {}).get("value")
            messages.append(f'"{value}" is not a choice of {field.name} ({choices}).')
        else:
            messages.extend(error.messages)
    return messages


def _field_input(field, value):
    """A JSON value as a field takes it. A JSON number for a decimal field goes through its short
    text (9.99, not the float's 9.9900000000000002131...), which the field's decimal places would
    refuse: the contract's decimals travel as numbers too. An integer field refuses true/false
    and a number with a fraction (ValidationError), which Django would store as 1 and 2 for
    `true` and `2.5`: conditions refuse them too (automation.conditions.coercion.coerce_value)."""
    if isinstance(field, models.DecimalField) and isinstance(value, float):
        return str(value)
    if isinstance(field, models.IntegerField) and (
        isinstance(value, bool) or (isinstance(value, float) and not value.is_integer())
    ):
        raise ValidationError(
            field.error_messages["invalid"], code="invalid", params={"value": value}
        )
    return value


def _is_scalar(value) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _can_lock(lock: bool) -> bool:
    """Lock the row against a concurrent edit? select_for_update needs the transaction the run
    wraps every database action in (a dry run or a bare call has none to lock in)."""
    return lock and transaction.get_connection().in_atomic_block


def _one(found: list, described: str):
    """The one record found; ActionError when none or more than one."""
    if not found:
        raise ActionError(f"No record matched: {described} in this organization.")
    if len(found) > 1:
        raise ActionError(f"More than one record matched {described}: make the lookup unique.")
    return found[0]


def _automatable_or_fail(label, path):
    try:
        return get_automatable(label)
    except LookupError as exc:
        raise ActionError(f"{path}: {exc}") from None


def _lookup_value(field, value, path):
    """A lookup value coerced to the field's type (a foreign key compares its related id)."""
    if not _is_scalar(value):
        raise ActionError(f"{path}: a lookup value is a single value, got {value!r}.")
    target = field.target_field if field.is_relation else field
    try:
        return None if value is None else target.to_python(value)
    except ValidationError as exc:
        if field.is_relation:
            raise ActionError(f"{path}: {not_an_id(field, value)}") from None
        raise ActionError(f"{path}: {' '.join(exc.messages)}") from None


def not_an_id(field, value) -> str:
    """A foreign key given something that is no id: most likely the related record's name."""
    related = field.related_model
    label = f"{related._meta.app_label}.{related._meta.model_name}"
    message = f"{value!r} is not an id: {field.name} takes the id of a {label} (a number)"
    name = name_field_of(related)
    return f"{message}, not its {name}." if name else f"{message}."


def _related_record(field, value, organization_id, path):
    """The related record a foreign key value names, only from the rule's organization."""
    if value is None or value == "":
        return None  # full_clean refuses it when the field is required
    related = field.related_model
    lookup = organization_lookup_for(related)
    if not _is_scalar(value) or isinstance(value, bool) or lookup is None:
        raise ActionError(f"{path}: expected the id of a related record, got {value!r}.")
    try:
        pk = related._meta.pk.to_python(value)
    except ValidationError:
        raise ActionError(f"{path}: {not_an_id(field, value)}") from None
    record = related._default_manager.filter(pk=pk, **{lookup: organization_id}).first()
    if record is None:
        label = f"{related._meta.app_label}.{related._meta.model_name}"
        raise ActionError(f"{path}: no {label} with id {value} in this organization.")
    return record


def _validation_message(exc: ValidationError, entry) -> str:
    label = entry.label
    if not hasattr(exc, "error_dict"):
        return f"Invalid {label}: {' '.join(exc.messages)}"
    parts = []
    for name, errors in exc.error_dict.items():
        where = "record" if name == NON_FIELD_ERRORS else f"fields.{name}"
        field = None if name == NON_FIELD_ERRORS else _field_or_none(entry, name)
        parts.append(f"{where}: {' '.join(field_messages(field, errors))}")
    return f"Invalid {label}: " + "; ".join(parts)


def _field_or_none(entry, name):
    try:
        return entry.field(name)
    except FieldDoesNotExist:  # a model's clean() may key its errors as it likes
        return None
