"""What every action handler shares: the ActionHandler base (parameter schema, save-time
validation, execution and dry run), rendering of templated parameters within the run's budgets,
secrets in parameters, and the checks of a whole parameters object."""

import copy
import json
import logging

from django.conf import settings
from django.db import models
from jsonschema import Draft202012Validator

from automation.actions import template_types
from automation.actions.templates import (
    RenderBudget,
    TemplateError,
    TemplateScope,
    placeholder_errors,
    render,
    render_text,
)
from automation.core.choices import TriggerType
from automation.core.context import zone_of
from automation.core.registry import get_automatable
from automation.core.snapshots import local_fields, without_nul
from automation.fanout import budget
from automation.fanout.chain import current_chain

logger = logging.getLogger("automation.actions.base")


MASK = "********"

TRIGGER = "trigger"


class ActionError(Exception):
    """An action's failure. The message is shown to users; `result` is kept in the action log."""

    def __init__(self, message, result=None):
        super().__init__(message)
        self.result = result


# --- Parameter paths (secrets, error paths) ------------------------------------------------------


def join_path(*parts) -> str:
    return ".".join(str(part) for part in parts if part != "")


def secret_locations(parameters, secret_paths) -> list[tuple[dict, str, tuple[str, ...]]]:
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


def value_at(parameters, keys: tuple[str, ...]):
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

    def reaches_outside(self, parameters) -> bool:
        """Does the action, with these parameters, reach outside the database (a request, an
        e-mail)? Such an action runs after the claim's transaction, its RUNNING state committed
        before it goes out and its result committed apart, in no transaction of the run's (it
        opens its own for what it writes); it is never part of a batch of database actions
        (runs/plan.py); runs reaching outside are batched apart (runs/outside_batch.py)."""
        return not self.writes_database

    def __init__(self):
        Draft202012Validator.check_schema(self.parameters_schema)
        self._validator = Draft202012Validator(self.parameters_schema)

    # Save time ------------------------------------------------------------------------------

    def validate(self, parameters, rule, order: int | None = None) -> dict[str, list[str]]:
        """{parameter path: [messages]}, {} when the parameters are valid for action `order`
        (its position; None when not known) of `rule`."""
        errors = parameters_bulk_errors(parameters)
        if errors:
            return errors  # too large or deep to walk any further
        errors = self._schema_errors(parameters)
        if "" in errors or not isinstance(parameters, dict):
            return errors  # not an object of parameters at all
        # Every parameter whose shape is right is checked further, so that one save reports
        # every mistake; one with a schema error (at it or below it) is left out of the deeper
        # checks, where it would only add noise. A check skips what is left out.
        sound = {name: value for name, value in parameters.items() if not has_error(errors, name)}
        for container, key, keys in secret_locations(sound, self.secret_paths):
            if container[key] == MASK:
                add_message(
                    errors, join_path(*keys), f'"{MASK}" stands for a stored secret; send it again.'
                )
        self.check(sound, rule, errors, template_scope(rule, order))
        return errors

    def check(self, parameters: dict, rule, errors: dict, scope: TemplateScope | None) -> None:
        """Checks beyond the schema (models, fields, templates: what `scope` lets placeholders
        read). Adds to `errors`. `parameters` holds only those of a valid shape: one that is
        required may be missing (its schema error is reported), so read it with `.get()`."""

    def _schema_errors(self, parameters) -> dict[str, list[str]]:
        errors: dict[str, list[str]] = {}
        for error in self._validator.iter_errors(parameters):
            path = join_path(*error.absolute_path)
            if error.validator == "required":
                for name in error.validator_value:
                    if name not in error.instance:
                        add_message(errors, join_path(path, name), "This parameter is required.")
            elif error.validator == "additionalProperties" and error.validator_value is False:
                extra = set(error.instance) - set(error.schema.get("properties", {}))
                for name in sorted(extra):
                    add_message(errors, join_path(path, name), "Unknown parameter.")
            elif error.validator == "type" and path not in self.schema_messages:
                add_message(errors, path, _type_message(error.validator_value, error.instance))
            elif error.validator == "enum" and path not in self.schema_messages:
                choices = ", ".join(str(choice) for choice in error.validator_value)
                shown = json.dumps(error.instance)
                shown = shown if len(shown) <= 100 else f"{shown[:100]}..."
                add_message(errors, path, f"{shown} is not one of {choices}.")
            else:
                message = self.schema_messages.get(path, error.message)
                add_message(errors, path, message)
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
            for container, key, _path in secret_locations(masked, self.secret_paths):
                container[key] = MASK
        return masked


def parameters_schema_of(properties: dict, required: list[str], description: str) -> dict:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "description": description,
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def spend_bytes(ctx, size: int) -> None:
    """Count `size` bytes an action is about to store against the run tree's and the
    organization's byte budgets and the storage quota (budget.admit_bytes); over one, the action
    fails with the reason before storing anything."""
    chain = current_chain()
    refusal = budget.admit_bytes(ctx.organization_id, chain.root_log_id if chain else None, size)
    if refusal:
        raise ActionError(refusal)


def count_bytes(ctx, result) -> None:
    """Count a webhook's result (at most webhooks.RESPONSE_BODY_LIMIT of its answer) against
    the byte budgets without refusing it: the call was made. What the run stores next is
    refused once the budget is spent (budget.count_bytes: in a batch of calls, counted with
    the others after the last)."""
    chain = current_chain()
    root_id = chain.root_log_id if chain else None
    budget.count_bytes(ctx.organization_id, root_id, budget.stored_size(result))


def add_message(errors: dict, path: str, message: str) -> None:
    errors.setdefault(path, []).append(message)


_JSON_TYPES = {
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "object": "an object",
    "array": "a list",
    "null": "null",
}


def _type_message(expected, instance) -> str:
    """ "Expected text, not a number." (jsonschema's own says "5 is not of type 'string'")."""
    wanted = [expected] if isinstance(expected, str) else list(expected)
    names = [_JSON_TYPES.get(name, name) for name in wanted]
    if isinstance(instance, bool):
        given = "true or false"
    elif isinstance(instance, int | float):
        given = "a number"
    else:
        given = _JSON_TYPES.get(
            {str: "string", dict: "object", list: "array"}.get(type(instance), ""), "null"
        )
    return f"Expected {' or '.join(names)}, not {given}."


def has_error(errors: dict, path: str) -> bool:
    """Is there an error at parameter `path` or below it?"""
    return any(key == path or key.startswith(f"{path}.") for key in errors)


def render_parameter(value, ctx, what: str, *, as_text: bool = False):
    """Parameter `what` rendered for the run, within the size its placeholders may produce.

    Limits per parameter and per run (AUTOMATION_TEMPLATE_MAX_PARAMETER_BYTES / _RUN_BYTES):
    placeholders that repeat earlier results multiply what a run holds, and every action's
    result, the notifications it sends and its log keep what was rendered.
    """
    budget = render_budget(ctx)
    zone = zone_of(ctx.timezone)  # dates are shown and shifted in the rule's time zone
    try:
        if as_text:
            rendered = render_text(value, ctx.template_variables(), budget, zone)
        else:
            rendered = render(value, ctx.template_variables(), budget, zone)
    except TemplateError as exc:
        raise ActionError(f"{what}: {exc}") from None
    ctx.rendered_bytes += budget.used
    # Placeholders copy record values and earlier results: no U+0000 into a stored value.
    return without_nul(rendered)


def render_budget(ctx) -> RenderBudget:
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


def template_errors(value, path: str, errors: dict, scope: TemplateScope | None) -> None:
    for message in placeholder_errors(value, scope):
        add_message(errors, path, message)


def template_scope(rule, order: int | None) -> TemplateScope | None:
    """What the placeholders of action `order` of `rule` can read (the record's snapshot fields,
    earlier results); None without a rule, when only placeholders' roots are checked."""
    if rule is None:
        return None
    if rule.refused_model:  # reported at the rule's model
        return TemplateScope(action_order=order)
    if not rule.content_type_id:
        has_payload = rule.trigger_type == TriggerType.WEBHOOK
        return TemplateScope(has_record=False, has_payload=has_payload, action_order=order)
    try:
        entry = get_automatable(rule.model)
    except LookupError:  # reported at the rule's model
        return TemplateScope(action_order=order)
    fields = local_fields(entry.model)  # what a snapshot holds
    return TemplateScope(
        fields=frozenset(field.name for field in fields),
        label=entry.label,
        value_fields=frozenset(field.name for field in fields if is_json_field(field)),
        action_order=order,
        field_kinds={field.name: template_types.of_field(field) for field in fields},
    )


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


def is_json_field(field) -> bool:
    return isinstance(field, models.JSONField)
