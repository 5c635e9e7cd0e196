"""The action registry: one handler per ActionType, with its parameter schema, save-time
validation, execution and dry run.

The run engine (automation/runs.py) and the API only talk to this module:
`get_handler(action_type)` / `registered_handlers()`, `parameter_errors()` (RuleAction.clean),
`mask_parameters()` wherever parameters are shown, and `merge_masked_secrets()` when an update
echoes "********" back. The contract's header ("ACTION PARAMETERS") is the specification.

Rules of every handler:
- Only the parameters the contract names are templates (see `templated` in each handler); they
  are rendered against `ctx.template_variables()`, plain JSON, never live model instances.
- Database handlers do not manage transactions (the run wraps each in one, with its log entry),
  touch only records of `ctx.organization_id`, only automatable models and only `writable`
  fields, and save through `instance.save()` / `instance.delete()` so signals fire, after
  `spend_write(ctx)` has counted the write against the fan-out budgets (automation/budget.py).
- A failure the user should read raises ActionError; its message names the parameter or field.
- `dry_run` renders and validates everything and describes the action, writing and sending
  nothing; secrets are masked in what it returns.
"""

import contextlib
import copy
import json
import logging

from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, FieldDoesNotExist, ValidationError
from django.db import models, transaction
from jsonschema import Draft202012Validator

from accounts.choices import Role
from accounts.models import Membership, Notification
from accounts.validation import full_clean_changes
from automation.actions import webhooks
from automation.actions.templates import (
    RenderBudget,
    TemplateError,
    TemplateScope,
    has_placeholder,
    placeholder_errors,
    render,
    render_text,
)
from automation.core.choices import ActionType
from automation.core.registry import PathError, get_automatable, resolve_path
from automation.core.snapshots import json_value, local_fields, snapshot, without_nul
from automation.fanout import budget
from automation.fanout.chain import current_chain
from automation.live.events import publish_notification
from automation.triggers.signals import remember_stored_row

logger = logging.getLogger("automation.actions.handlers")

MASK = "********"
TRIGGER = "trigger"


class ActionError(Exception):
    """An action's failure. The message is shown to users; `result` is kept in the action log."""

    def __init__(self, message, result=None):
        super().__init__(message)
        self.result = result


# --- Parameter paths (secrets, error paths) ------------------------------------------------------


def _join(*parts) -> str:
    return ".".join(str(part) for part in parts if part != "")


def _secret_locations(parameters, secret_paths) -> list[tuple[dict, str, tuple[str, ...]]]:
    """(container, key, key path) of every secret present in `parameters`.

    A secret path is dotted; "*" stands for every key of a dict ("headers.*"). Key paths are
    tuples because a header name may itself contain a dot.
    """
    found = []
    for pattern in secret_paths:
        *parents, last = pattern.split(".")
        containers = [(parameters, ())]
        for part in parents:
            containers = [
                (container[part], (*keys, part))
                for container, keys in containers
                if isinstance(container, dict) and isinstance(container.get(part), dict)
            ]
        for container, keys in containers:
            if not isinstance(container, dict):
                continue
            names = list(container) if last == "*" else [last] if last in container else []
            found.extend((container, name, (*keys, name)) for name in names)
    return found


def _value_at(parameters, keys: tuple[str, ...]):
    current = parameters
    for key in keys:
        if not isinstance(current, dict) or key not in current:
            return None
        current = current[key]
    return current


# --- The handler base --------------------------------------------------------------------------


class ActionHandler:
    """One action type. Subclasses set the class attributes and implement the three methods."""

    action_type: str
    parameters_schema: dict
    # Dotted paths of write-only values; "*" matches every key of a dict ("headers.*").
    secret_paths: tuple[str, ...] = ()
    # Parameters that say where the secrets go: a stored secret is kept only while they stay.
    secrets_bound_to: tuple[str, ...] = ()
    writes_database: bool = True
    # Messages for schema errors at a path where jsonschema's own wording would confuse.
    schema_messages: dict[str, str] = {}

    def __init__(self):
        Draft202012Validator.check_schema(self.parameters_schema)
        self._validator = Draft202012Validator(self.parameters_schema)

    # Save time ------------------------------------------------------------------------------

    def validate(self, parameters, rule, order: int | None = None) -> dict[str, list[str]]:
        """{parameter path: [messages]}, {} when the parameters are valid for action `order`
        (its position; None when not known) of `rule`."""
        errors = parameters_bulk_errors(parameters) or self._schema_errors(parameters)
        if errors:
            return errors  # the shape is wrong: deeper checks would only add noise
        for container, key, keys in _secret_locations(parameters, self.secret_paths):
            if container[key] == MASK:
                _add(errors, _join(*keys), f'"{MASK}" stands for a stored secret; send it again.')
        self.check(parameters, rule, errors, template_scope(rule, order))
        return errors

    def check(self, parameters: dict, rule, errors: dict, scope: TemplateScope | None) -> None:
        """Checks beyond the schema (models, fields, templates: what `scope` lets placeholders
        read). Adds to `errors`."""

    def _schema_errors(self, parameters) -> dict[str, list[str]]:
        errors: dict[str, list[str]] = {}
        for error in self._validator.iter_errors(parameters):
            path = _join(*error.absolute_path)
            if error.validator == "required":
                for name in error.validator_value:
                    if name not in error.instance:
                        _add(errors, _join(path, name), "This parameter is required.")
            elif error.validator == "additionalProperties" and error.validator_value is False:
                extra = set(error.instance) - set(error.schema.get("properties", {}))
                for name in sorted(extra):
                    _add(errors, _join(path, name), "Unknown parameter.")
            else:
                message = self.schema_messages.get(path, error.message)
                _add(errors, path, message)
        return errors

    # Run time -------------------------------------------------------------------------------

    def execute(self, parameters: dict, ctx, *, on_attempt=None) -> dict:
        raise NotImplementedError

    def dry_run(self, parameters: dict, ctx) -> dict:
        raise NotImplementedError

    def changed_binding(self, new_parameters, old_action_type, old_parameters) -> str | None:
        """What changed of the stored secrets' destination ("url", "action type"...), or None."""
        if old_action_type != self.action_type:
            return "action type"
        defaults = self.parameters_schema["properties"]
        changed = [
            name
            for name in self.secrets_bound_to
            if new_parameters.get(name, defaults[name].get("default"))
            != old_parameters.get(name, defaults[name].get("default"))
        ]
        return " and ".join(changed) or None

    def mask(self, parameters):
        """A deep copy with every secret replaced by MASK."""
        masked = copy.deepcopy(parameters)
        if isinstance(masked, dict):
            for container, key, _path in _secret_locations(masked, self.secret_paths):
                container[key] = MASK
        return masked


def spend_bytes(ctx, size: int) -> None:
    """Count `size` bytes an action is about to store against the run tree's and the
    organization's byte budgets and the storage quota (budget.admit_bytes); over one, the action
    fails with the reason before storing anything."""
    chain = current_chain()
    refusal = budget.admit_bytes(ctx.organization_id, chain.root_log_id if chain else None, size)
    if refusal:
        raise ActionError(refusal)


def _count_bytes(ctx, result) -> None:
    """Count a webhook's result (at most webhooks.RESPONSE_BODY_LIMIT of its answer) against
    the byte budgets without refusing it: the call was made. What the run stores next is
    refused once the budget is spent."""
    with contextlib.suppress(ActionError):
        spend_bytes(ctx, budget.stored_size(result))


def _add(errors: dict, path: str, message: str) -> None:
    errors.setdefault(path, []).append(message)


def _render(value, ctx, what: str, *, as_text: bool = False):
    """Parameter `what` rendered for the run, within the size its placeholders may produce.

    Limits per parameter and per run (AUTOMATION_TEMPLATE_MAX_PARAMETER_BYTES / _RUN_BYTES):
    placeholders that repeat earlier results multiply what a run holds, and every action's
    result, the notifications it sends and its log keep what was rendered.
    """
    budget = _render_budget(ctx)
    try:
        if as_text:
            rendered = render_text(value, ctx.template_variables(), budget)
        else:
            rendered = render(value, ctx.template_variables(), budget)
    except TemplateError as exc:
        raise ActionError(f"{what}: {exc}") from None
    ctx.rendered_bytes += budget.used
    # Placeholders copy record values and earlier results: no U+0000 into a stored value.
    return without_nul(rendered)


def _render_budget(ctx) -> RenderBudget:
    """What the next parameter may render: its own limit, or what is left of the run's."""
    per_parameter = settings.AUTOMATION_TEMPLATE_MAX_PARAMETER_BYTES
    per_run = settings.AUTOMATION_TEMPLATE_MAX_RUN_BYTES
    left_in_run = per_run - ctx.rendered_bytes
    if left_in_run < per_parameter:
        return RenderBudget(
            max(left_in_run, 0),
            f"this run's templates render more than {per_run} bytes in all "
            "(AUTOMATION_TEMPLATE_MAX_RUN_BYTES); do placeholders repeat earlier results?",
        )
    return RenderBudget(
        per_parameter,
        f"the template renders more than {per_parameter} bytes "
        "(AUTOMATION_TEMPLATE_MAX_PARAMETER_BYTES); do placeholders repeat earlier results?",
    )


def _template_errors(value, path: str, errors: dict, scope: TemplateScope | None) -> None:
    for message in placeholder_errors(value, scope):
        _add(errors, path, message)


def template_scope(rule, order: int | None) -> TemplateScope | None:
    """What the placeholders of action `order` of `rule` can read (the record's snapshot fields,
    earlier results); None without a rule, when only placeholders' roots are checked."""
    if rule is None:
        return None
    if not rule.content_type_id:
        return TemplateScope(has_record=False, action_order=order)
    try:
        entry = get_automatable(rule.model)
    except LookupError:  # reported at the rule's model
        return TemplateScope(action_order=order)
    fields = local_fields(entry.model)  # what a snapshot holds
    return TemplateScope(
        fields=frozenset(field.name for field in fields),
        label=entry.label,
        value_fields=frozenset(field.name for field in fields if _is_json_field(field)),
        action_order=order,
    )


# --- Records: create, update, delete -------------------------------------------------------------

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


def _schema(properties: dict, required: list[str], description: str) -> dict:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "description": description,
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


class RecordHandler(ActionHandler):
    """Shared by the three database actions: target resolution, field checks, value coercion."""

    schema_messages = {"target": _TARGET_MESSAGE}

    # Save time ------------------------------------------------------------------------------

    def check_target(self, target, rule, errors, scope) -> str | None:
        """The target's model label when it is valid (errors added otherwise)."""
        if target == TRIGGER:
            label = rule.model if rule is not None else None
            if label is None:
                _add(
                    errors,
                    "target",
                    'This rule has no model, so there is no triggering record: name a "model" '
                    'and a "lookup".',
                )
            return label
        label = self.check_model(target["model"], "target.model", errors)
        for name, value in target["lookup"].items():
            path = _join("target.lookup", name)
            if label is not None:
                self._check_lookup(label, name, value, path, errors)
            if not _is_scalar(value):
                _add(errors, path, "A lookup value is a single value.")
            _template_errors(value, path, errors, scope)
        return label

    @staticmethod
    def _check_lookup(label, name, value, path, errors) -> None:
        """A lookup names a local field; a literal value must coerce to it as the run will."""
        try:
            resolved = resolve_path(label, name)
        except PathError as exc:
            _add(errors, path, str(exc))
            return
        if not resolved.is_local:
            _add(errors, path, "A lookup uses the model's own fields only.")
        elif _is_scalar(value) and not has_placeholder(value):
            try:
                _lookup_value(resolved.field, value, path)
            except ActionError as exc:
                _add(errors, path, str(exc).removeprefix(f"{path}: "))

    def check_model(self, label, path, errors) -> str | None:
        try:
            entry = get_automatable(label)
        except LookupError as exc:
            _add(errors, path, str(exc))
            return None
        if not _is_org_scoped(entry.model):
            _add(errors, path, f'"{label}" has no organization; automation cannot write it.')
            return None
        return entry.label

    def check_fields(self, label, fields: dict, errors, rule, scope) -> None:
        entry = get_automatable(label)
        for name, value in fields.items():
            path = _join("fields", name)
            if name not in entry.writable:
                _add(errors, path, f'"{name}" is not a writable field of {label}.')
                continue
            _template_errors(value, path, errors, scope)
            field = entry.field(name)
            if field.is_relation and not _is_org_scoped(field.related_model):
                _add(errors, path, f'"{name}" points to records automation cannot check.')
            elif not _is_json_field(field) and not _is_scalar(value):
                _add(errors, path, f'"{name}" takes a single value, not a list or object.')
            elif has_placeholder(value):
                continue  # what a placeholder gives is only known, and checked, at run time
            elif field.is_relation:
                try:
                    _related_record(field, value, rule.organization_id, path)
                except ActionError as exc:
                    _add(errors, path, str(exc).removeprefix(f"{path}: "))
            else:
                for message in literal_value_errors(field, value):
                    _add(errors, path, message)

    # Run time -------------------------------------------------------------------------------

    def find_target(self, parameters, ctx, *, lock: bool):
        """The record to act on, of the rule's organization only. ActionError when none."""
        target = parameters.get("target", TRIGGER)
        if target == TRIGGER:
            if not ctx.model or ctx.object_id is None:
                raise ActionError('target "trigger": this run has no triggering record.')
            entry = _automatable_or_fail(ctx.model, "target")
            filters = {"pk": ctx.object_id}
            described = f"{entry.label} {ctx.object_id}"
        else:
            entry = _automatable_or_fail(target["model"], "target.model")
            lookup = _render(target["lookup"], ctx, "target.lookup")
            filters = {}
            for name, value in lookup.items():
                path = _join("target.lookup", name)
                try:
                    resolved = resolve_path(entry.label, name)
                except PathError as exc:
                    raise ActionError(f"{path}: {exc}") from None
                if not resolved.is_local:
                    raise ActionError(f"{path}: a lookup uses the model's own fields only.")
                filters[resolved.field.attname] = _lookup_value(resolved.field, value, path)
            described = f"{entry.label} where {lookup}"
        queryset = entry.model._default_manager.filter(
            organization_id=ctx.organization_id, **filters
        )
        # Lock the row against a concurrent edit; select_for_update needs the transaction the
        # run wraps every database action in (a dry run or a bare call has none to lock in).
        if lock and transaction.get_connection().in_atomic_block:
            queryset = queryset.select_for_update()
        found = list(queryset[:2])
        if not found:
            raise ActionError(f"No record matched: {described} in this organization.")
        if len(found) > 1:
            raise ActionError(f"More than one record matched {described}: make the lookup unique.")
        return entry, found[0]

    def spend_write(self, ctx) -> None:
        """Count the write about to happen against the run's fan-out budgets (budget.py); over
        one, the action fails with the reason before writing."""
        chain = current_chain()
        refusal = budget.admit_write(ctx.organization_id, chain.root_log_id if chain else None)
        if refusal:
            raise ActionError(refusal)

    def spend_record_bytes(self, ctx, instance) -> None:
        """Count the record about to be written, twice (the row, and its snapshot in the
        action's result), against the byte budgets; over one, the action fails before writing."""
        spend_bytes(ctx, 2 * budget.stored_size(snapshot(instance)))

    def assign_fields(self, entry, instance, fields: dict, ctx) -> None:
        """Set rendered field values on `instance` and validate it with the model's own rules."""
        for name, value in fields.items():
            path = _join("fields", name)
            if name not in entry.writable:
                raise ActionError(f'{path}: "{name}" is not a writable field of {entry.label}.')
            field = entry.field(name)
            if field.is_relation:
                record = _related_record(field, value, ctx.organization_id, path)
                setattr(instance, field.name, record)
            else:
                if not _is_json_field(field) and not _is_scalar(value):
                    raise ActionError(f'{path}: "{name}" takes a single value, got {value!r}.')
                try:
                    setattr(instance, field.attname, _field_input(field, value))
                except ValidationError as exc:
                    raise ActionError(f"{path}: {' '.join(exc.messages)}") from None
        try:
            full_clean_changes(instance, fields)
        except ValidationError as exc:
            raise ActionError(_validation_message(exc, entry.label)) from None


class UpdateRecordHandler(RecordHandler):
    action_type = ActionType.UPDATE_RECORD
    parameters_schema = _schema(
        {"target": _TARGET_SCHEMA, "fields": _FIELDS_SCHEMA},
        ["fields"],
        "Update the triggering record, or the one record a lookup finds, in the rule's "
        "organization.",
    )

    def check(self, parameters, rule, errors, scope):
        label = self.check_target(parameters.get("target", TRIGGER), rule, errors, scope)
        if label is not None:
            self.check_fields(label, parameters["fields"], errors, rule, scope)

    def _prepare(self, parameters, ctx, *, lock):
        entry, instance = self.find_target(parameters, ctx, lock=lock)
        if lock:
            remember_stored_row(instance)
        fields = _render(parameters["fields"], ctx, "fields")
        self.assign_fields(entry, instance, fields, ctx)
        return entry, instance, fields

    def execute(self, parameters, ctx, *, on_attempt=None):
        entry, instance, fields = self._prepare(parameters, ctx, lock=True)
        self.spend_write(ctx)
        self.spend_record_bytes(ctx, instance)
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
    parameters_schema = _schema(
        {"model": {"type": "string", "minLength": 1}, "fields": _FIELDS_SCHEMA},
        ["model", "fields"],
        "Create a record of an automatable model in the rule's organization.",
    )

    def check(self, parameters, rule, errors, scope):
        label = self.check_model(parameters["model"], "model", errors)
        if label is not None:
            self.check_fields(label, parameters["fields"], errors, rule, scope)

    def _prepare(self, parameters, ctx):
        entry = _automatable_or_fail(parameters["model"], "model")
        fields = _render(parameters["fields"], ctx, "fields")
        instance = entry.model(organization_id=ctx.organization_id)
        self.assign_fields(entry, instance, fields, ctx)
        return entry, instance, fields

    def execute(self, parameters, ctx, *, on_attempt=None):
        entry, instance, _fields = self._prepare(parameters, ctx)
        self.spend_write(ctx)
        self.spend_record_bytes(ctx, instance)
        instance.save()
        return {"model": entry.label, "id": json_value(instance.pk), "record": snapshot(instance)}

    def dry_run(self, parameters, ctx):
        entry, _instance, fields = self._prepare(parameters, ctx)
        # No id: nothing is created. A later action reading "results.N.id" sees null.
        return {"would": "create", "model": entry.label, "id": None, "fields": fields}


class DeleteRecordHandler(RecordHandler):
    action_type = ActionType.DELETE_RECORD
    parameters_schema = _schema(
        {"target": _TARGET_SCHEMA},
        [],
        "Delete the triggering record, or the one record a lookup finds, in the rule's "
        "organization.",
    )

    def check(self, parameters, rule, errors, scope):
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
        return exc.messages
    return []


def _field_input(field, value):
    """A JSON value as a field takes it. A JSON number for a decimal field goes through its short
    text (9.99, not the float's 9.9900000000000002131...), which the field's decimal places would
    refuse: the contract's decimals travel as numbers too. An integer field refuses true/false
    and a number with a fraction (ValidationError), which Django would store as 1 and 2 for
    `true` and `2.5`: conditions refuse them too (automation.conditions.evaluate.coerce_value)."""
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


def _is_json_field(field) -> bool:
    return isinstance(field, models.JSONField)


def _is_org_scoped(model) -> bool:
    try:
        return model._meta.get_field("organization").is_relation
    except FieldDoesNotExist:
        return False


def _automatable_or_fail(label, path):
    try:
        entry = get_automatable(label)
    except LookupError as exc:
        raise ActionError(f"{path}: {exc}") from None
    if not _is_org_scoped(entry.model):
        raise ActionError(f'{path}: "{label}" has no organization; automation cannot write it.')
    return entry


def _lookup_value(field, value, path):
    """A lookup value coerced to the field's type (a foreign key compares its related id)."""
    if not _is_scalar(value):
        raise ActionError(f"{path}: a lookup value is a single value, got {value!r}.")
    target = field.target_field if field.is_relation else field
    try:
        return None if value is None else target.to_python(value)
    except ValidationError as exc:
        raise ActionError(f"{path}: {' '.join(exc.messages)}") from None


def _related_record(field, value, organization_id, path):
    """The related record a foreign key value names, only from the rule's organization."""
    if value is None or value == "":
        return None  # full_clean refuses it when the field is required
    related = field.related_model
    if not _is_scalar(value) or isinstance(value, bool) or not _is_org_scoped(related):
        raise ActionError(f"{path}: expected the id of a related record, got {value!r}.")
    try:
        pk = related._meta.pk.to_python(value)
    except ValidationError:
        raise ActionError(f"{path}: {value!r} is not a valid id.") from None
    record = related._default_manager.filter(pk=pk, organization_id=organization_id).first()
    if record is None:
        label = f"{related._meta.app_label}.{related._meta.model_name}"
        raise ActionError(f"{path}: no {label} with id {value} in this organization.")
    return record


def _validation_message(exc: ValidationError, label: str) -> str:
    if not hasattr(exc, "error_dict"):
        return f"Invalid {label}: {' '.join(exc.messages)}"
    parts = []
    for name, messages in exc.message_dict.items():
        where = "record" if name == NON_FIELD_ERRORS else f"fields.{name}"
        parts.append(f"{where}: {' '.join(messages)}")
    return f"Invalid {label}: " + "; ".join(parts)


# --- Notifications --------------------------------------------------------------------------------

TITLE_MAX_LENGTH = Notification._meta.get_field("title").max_length


class SendNotificationHandler(ActionHandler):
    action_type = ActionType.SEND_NOTIFICATION
    parameters_schema = _schema(
        {
            "recipients": {
                "description": "Members of the rule's organization, by username and/or by role.",
                "type": "object",
                "properties": {
                    "usernames": {
                        "type": "array",
                        "items": {"type": "string", "minLength": 1},
                        "uniqueItems": True,
                    },
                    "roles": {
                        "type": "array",
                        "items": {"enum": list(Role.values)},
                        "uniqueItems": True,
                    },
                },
                "additionalProperties": False,
            },
            "title": {"type": "string", "minLength": 1, "maxLength": TITLE_MAX_LENGTH},
            "body": {"type": "string"},
        },
        ["recipients", "title"],
        "Notify members of the rule's organization (a Notification each, streamed live).",
    )

    def check(self, parameters, rule, errors, scope):
        recipients = parameters["recipients"]
        usernames = recipients.get("usernames", [])
        if not usernames and not recipients.get("roles"):
            _add(errors, "recipients", "Name at least one username or role.")
        organization_id = getattr(rule, "organization_id", None)
        if usernames and organization_id is not None:
            members = set(
                Membership.objects.filter(
                    organization_id=organization_id, user__username__in=usernames
                ).values_list("user__username", flat=True)
            )
            for index, username in enumerate(usernames):
                if username not in members:
                    _add(
                        errors,
                        f"recipients.usernames.{index}",
                        f'"{username}" is not a member of this organization.',
                    )
        _template_errors(parameters["title"], "title", errors, scope)
        _template_errors(parameters.get("body", ""), "body", errors, scope)

    def _prepare(self, parameters, ctx):
        title = _render(parameters["title"], ctx, "title", as_text=True)
        body = _render(parameters.get("body", ""), ctx, "body", as_text=True)
        if len(title) > TITLE_MAX_LENGTH:
            title = title[: TITLE_MAX_LENGTH - 1] + "…"
        users, skipped = self._recipients(parameters["recipients"], ctx.organization_id)
        if not users:
            raise ActionError(
                "No recipient: none of the usernames and roles names an active member of this "
                "organization.",
                result={"notification_ids": [], "recipients": [], "skipped": skipped},
            )
        return title, body, users, skipped

    @staticmethod
    def _recipients(recipients: dict, organization_id) -> tuple[list, list[str]]:
        """Active members named by username or role (sorted), and usernames that are not."""
        usernames = recipients.get("usernames", [])
        roles = recipients.get("roles", [])
        # Through Membership rows of this organization only: a role held elsewhere never counts.
        memberships = (
            Membership.objects.filter(organization_id=organization_id, user__is_active=True)
            .filter(models.Q(user__username__in=usernames) | models.Q(role__in=roles))
            .select_related("user")
            .order_by("user__username")
        )
        users = [membership.user for membership in memberships]
        found = {user.username for user in users}
        return users, [name for name in usernames if name not in found]

    def execute(self, parameters, ctx, *, on_attempt=None):
        title, body, users, skipped = self._prepare(parameters, ctx)
        spend_bytes(ctx, len(users) * budget.stored_size(title, body))
        ids = []
        for user in users:
            notification = Notification.objects.create(
                organization_id=ctx.organization_id,
                recipient=user,
                title=title,
                body=body,
                log_id=ctx.log_id,
            )
            publish_notification(notification)
            ids.append(notification.pk)
        return {
            "notification_ids": ids,
            "recipients": [user.username for user in users],
            "skipped": skipped,
        }

    def dry_run(self, parameters, ctx):
        title, body, users, skipped = self._prepare(parameters, ctx)
        return {
            "would": "notify",
            "recipients": [user.username for user in users],
            "skipped": skipped,
            "title": title,
            "body": body,
        }


# --- Webhooks -------------------------------------------------------------------------------------

WEBHOOK_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
MAX_TIMEOUT_SECONDS = 60
MAX_ATTEMPTS = 10


class CallWebhookHandler(ActionHandler):
    action_type = ActionType.CALL_WEBHOOK
    writes_database = False
    secret_paths = ("secret", "headers.*")
    secrets_bound_to = ("url", "method")
    parameters_schema = _schema(
        {
            "url": {"type": "string", "minLength": 1, "maxLength": 2048},
            "method": {"enum": WEBHOOK_METHODS, "default": "POST"},
            "headers": {
                "description": "Extra headers; their values are write-only secrets.",
                "type": "object",
                "additionalProperties": {"type": "string", "maxLength": 4096},
            },
            "body": {"description": "Any JSON; sent as compact UTF-8 JSON and signed."},
            "secret": {
                "description": "HMAC-SHA256 key of X-Automation-Signature (write-only).",
                "type": ["string", "null"],
            },
            "timeoutSeconds": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": MAX_TIMEOUT_SECONDS,
                "default": 10,
            },
            "maxAttempts": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_ATTEMPTS,
                "default": 3,
            },
        },
        ["url"],
        "Call an http(s) URL with a JSON body, signed when a secret is set, retried on 5xx and "
        "network errors.",
    )

    def check(self, parameters, rule, errors, scope):
        url = parameters["url"]
        _template_errors(url, "url", errors, scope)
        _template_errors(parameters.get("body"), "body", errors, scope)
        if "url" not in errors and "{{" not in url:
            try:
                _check_static_url(url)
            except webhooks.WebhookRefused as exc:
                _add(errors, "url", str(exc))
        for name, value in parameters.get("headers", {}).items():
            path = _join("headers", name)
            if name.lower() in webhooks.RESERVED_HEADERS:
                _add(errors, path, f'"{name}" is set by the engine.')
            elif not name or not all(33 <= ord(char) < 127 and char != ":" for char in name):
                _add(errors, path, "Not a valid header name.")
            if any(char in value for char in "\r\n\0"):
                _add(errors, path, "A header value cannot contain line breaks.")

    def _prepare(self, parameters, ctx) -> tuple[webhooks.WebhookRequest, object]:
        """The request to send, and the rendered body it encodes."""
        url = _render(parameters["url"], ctx, "url")
        if not isinstance(url, str):
            raise ActionError(f"url: rendered to {url!r}, not a URL.")
        try:
            _check_static_url(url)
        except webhooks.WebhookRefused as exc:
            raise ActionError(f"url: {exc}") from None
        body = _render(parameters.get("body"), ctx, "body")
        try:
            raw_body = webhooks.encode_body(body)
        except (TypeError, ValueError) as exc:
            raise ActionError(f"body: cannot be sent as JSON: {exc}") from None
        request = webhooks.WebhookRequest(
            url=url,
            method=parameters.get("method", "POST"),
            headers=dict(parameters.get("headers", {})),
            body=raw_body,
            secret=parameters.get("secret") or None,
            idempotency_key=f"{ctx.log_id}-{ctx.action_order}",
            timeout=float(parameters.get("timeoutSeconds", 10)),
            max_attempts=int(parameters.get("maxAttempts", 3)),
        )
        return request, body

    def execute(self, parameters, ctx, *, on_attempt=None):
        if ctx.log_id is None or ctx.action_order is None:
            raise ActionError("A webhook needs the run's log id and action order.")
        request, _body = self._prepare(parameters, ctx)
        try:
            result = webhooks.send(request, on_attempt=on_attempt)
        except webhooks.WebhookError as exc:
            _count_bytes(ctx, exc.result)
            raise ActionError(str(exc), result=exc.result) from None
        _count_bytes(ctx, result)
        return result

    def dry_run(self, parameters, ctx):
        request, body = self._prepare(parameters, ctx)
        return {
            "would": "call",
            "method": request.method,
            "url": request.url,
            "headers": {name: MASK for name in request.headers},
            "body": body,
            "signed": bool(request.secret),
            "timeoutSeconds": request.timeout,
            "maxAttempts": request.max_attempts,
            # The host's DNS answer is checked when the request is sent, not in a dry run.
        }


# Parameters are stored with the rule and rendered on every run: far below the request body limit.
MAX_PARAMETERS_DEPTH = 20
MAX_PARAMETERS_BYTES = 64 * 1024


def parameters_bulk_errors(parameters) -> dict[str, list[str]]:
    """Refuse parameters nested or sized beyond any real use, before anything walks them.

    Checked without recursion, first of all: deeper structures crash recursive code (schema
    validation, template rendering) with RecursionError, and huge ones bloat every run's log.
    """
    stack = [(parameters, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_PARAMETERS_DEPTH:
            return {"": [f"Parameters nest deeper than {MAX_PARAMETERS_DEPTH} levels."]}
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
    size = len(json.dumps(parameters, default=str).encode())
    if size > MAX_PARAMETERS_BYTES:
        return {"": [f"Parameters take {size} bytes as JSON; the limit is {MAX_PARAMETERS_BYTES}."]}
    return {}


def _check_static_url(url: str) -> None:
    """What can be checked without DNS: scheme, host, and an IP-literal host's address."""
    parsed = webhooks.check_url_syntax(url)
    ip = webhooks.literal_address(parsed.host)
    if ip is not None:
        webhooks.check_address(ip, parsed.port or (443 if parsed.scheme == "https" else 80))


# --- The registry ---------------------------------------------------------------------------------

_HANDLERS: dict[str, ActionHandler] = {
    handler.action_type: handler
    for handler in (
        CreateRecordHandler(),
        UpdateRecordHandler(),
        DeleteRecordHandler(),
        SendNotificationHandler(),
        CallWebhookHandler(),
    )
}


def get_handler(action_type) -> ActionHandler:
    """The handler of `action_type`; KeyError (a LookupError) when there is none."""
    try:
        return _HANDLERS[action_type]
    except KeyError:
        raise KeyError(f'Unknown action type "{action_type}".') from None


def registered_handlers() -> list[ActionHandler]:
    return [_HANDLERS[action_type] for action_type in ActionType.values]


def parameter_errors(
    action_type, parameters, rule, order: int | None = None
) -> dict[str, list[str]]:
    """Save-time validation used by RuleAction.clean(): {parameter path: [messages]}, for the
    action at position `order` of `rule` (None: not known, `results.N` is not checked)."""
    try:
        handler = get_handler(action_type)
    except KeyError:
        return {"": [f'Unknown action type "{action_type}".']}
    return handler.validate(parameters, rule, order)


def mask_parameters(action_type, parameters):
    """A copy of `parameters` with every secret replaced by MASK (for anything shown)."""
    try:
        handler = get_handler(action_type)
    except KeyError:
        return copy.deepcopy(parameters)
    return handler.mask(parameters)


def merge_masked_secrets(action_type, new_parameters, old_action_type, old_parameters):
    """(parameters, errors): `new_parameters` where each secret sent back as MASK takes its stored
    value, and {parameter path: [message]} for the masks that may not.

    A stored secret was given for one destination, so it is kept only while the action at its
    position keeps its type and the parameters the secret is bound to (a webhook's url and
    method, compared as stored). Otherwise an editor could point it at a server of their own:
    each such mask is removed from the parameters and reported, and the client must send the
    secret again. A MASK with no stored value at its path stays, and validation refuses it.
    """
    merged = copy.deepcopy(new_parameters)
    try:
        handler = get_handler(action_type)
    except KeyError:
        return merged, {}
    if not isinstance(merged, dict) or not isinstance(old_parameters, dict):
        return merged, {}
    changed = handler.changed_binding(merged, old_action_type, old_parameters)
    errors: dict[str, list[str]] = {}
    for container, key, keys in _secret_locations(merged, handler.secret_paths):
        if container[key] != MASK:
            continue
        stored = _value_at(old_parameters, keys)
        if stored is None:
            continue
        if changed:
            del container[key]
            _add(errors, _join(*keys), f"The {changed} changed: send this secret again.")
        else:
            container[key] = stored
    return merged, errors
