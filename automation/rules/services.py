"""Creating, changing and deleting rules: the one write path for a rule and its tree.

The API and the tests call these functions. Input is a plain dict with the API's fields in
snake_case (see `create_rule`); errors are a Django `ValidationError` keyed by the API's input path
("name", "schedule", "conditions.groups.0.conditions.1.field", "actions.2.parameters.url"), so the
API can hand them to the client as they are.

Everything is validated in memory before the first write, inside one transaction: on any error
nothing is written. Every successful change bumps the rule's `revision`. Writes go through
`save()` / `delete()` so model signals (the rule index version, live events) fire.
"""

import datetime
import logging

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.current import acting_as, get_current_user
from automation.core.durations import length_of
from automation.core.models import AutomationRule, RuleAction
from automation.core.registry import get_automatable
from automation.rules import condition_trees

logger = logging.getLogger("automation.rules.services")

# A rule's actions: beyond this a rule is not something a person wrote. The condition tree's
# bounds are settings (AUTOMATION_CONDITIONS_MAX_*), see check_tree_size.
MAX_ACTIONS = 50

# Model field name -> API input name, for errors raised by the models' clean().
RULE_FIELD_PATHS = {
    "content_type": "model",
    "trigger_type": "triggerType",
    "trigger_event": "triggerEvent",
    "watched_fields": "watchedFields",
    "allow_self_trigger": "allowSelfTrigger",
    "missed_run_policy": "missedRunPolicy",
    "is_active": "isActive",
    "webhook_secret": "webhookSecret",
    "hold_for": "holdFor",
    "__all__": "input",
}
ACTION_FIELD_PATHS = {
    "action_type": "actionType",
    "continue_on_failure": "continueOnFailure",
    "__all__": "",
}

# Rule attributes an update may set (trigger_type is fixed at creation).
UPDATABLE_FIELDS = (
    "name",
    "description",
    "is_active",
    "trigger_event",
    "watched_fields",
    "allow_self_trigger",
    "schedule",
    "timezone",
    "missed_run_policy",
    "webhook_secret",  # "" removes it
    "hold_for",  # an ISO 8601 duration; "" removes it
)


class _Errors(dict):
    """{input path: [messages]} collected across the whole input."""

    def add(self, path: str, messages) -> None:
        self.setdefault(path, []).extend(messages)

    def add_validation_error(self, exc: ValidationError, prefix: str, names: dict) -> None:
        for key, messages in exc.message_dict.items():
            name = names.get(key, key)
            path = ".".join(part for part in (prefix, name) if part) or "input"
            self.add(path, messages)

    def raise_if_any(self) -> None:
        if self:
            raise ValidationError(dict(self))


# --- Public service functions --------------------------------------------------------------------


def create_rule(organization, data: dict, *, user=None) -> AutomationRule:
    """Create a rule with its condition tree and actions.

    `data`: name, trigger_type, and optionally description, is_active, model ("app.model"),
    trigger_event, watched_fields, allow_self_trigger, schedule, timezone, missed_run_policy,
    webhook_secret (WEBHOOK rules, whose URL token is made when the rule is saved), hold_for
    (an ISO 8601 duration such as "PT30M"), conditions ({logic, negate, conditions: [{field, operator, value, previous, value_field,
    negate}], groups: [...]}),
    actions ([{action_type, parameters, continue_on_failure, when}], `when` a condition tree
    like `conditions`, or None).
    """
    with _acting(user), transaction.atomic():
        rule = AutomationRule(organization=organization, trigger_type=data.get("trigger_type"))
        errors = _Errors()
        _apply_rule_fields(rule, data, UPDATABLE_FIELDS, errors)
        _apply_model(rule, data, errors)
        tree = data.get("conditions") or {}
        actions = data.get("actions") or []
        _validate_rule(rule, errors)
        built_tree = condition_trees.build_condition_tree(rule, tree, errors)
        built_actions = _build_actions(rule, actions, old_actions=[], errors=errors)
        errors.raise_if_any()
        _save_rule(rule)
        condition_trees.save_tree(rule, built_tree)
        _save_actions(rule, built_actions)
        logger.info("rule %s created in organization %s", rule.pk, organization.pk)
        return rule


def update_rule(rule: AutomationRule, data: dict, *, user=None) -> AutomationRule:
    """Change the given fields; a given `conditions` / `actions` replaces the old whole.

    An action parameter sent back as the mask ("********") keeps the stored secret of the action
    at the same position while its type and the parameters the secret is bound to (a webhook's
    url and method) stay the same; otherwise it is a VALIDATION_ERROR at that parameter, and the
    secret must be sent again. Existing conditions and actions that are kept are validated again
    against the changed rule (e.g. a new model), under their current paths.
    """
    with _acting(user), transaction.atomic():
        rule = AutomationRule.objects.select_for_update().get(pk=rule.pk, deleted_at__isnull=True)
        errors = _Errors()
        _apply_rule_fields(rule, data, UPDATABLE_FIELDS, errors)
        _apply_model(rule, data, errors)
        _validate_rule(rule, errors)
        old_actions = list(rule.actions.all())
        tree_given = "conditions" in data and data["conditions"] is not None
        actions_given = "actions" in data and data["actions"] is not None
        tree = data["conditions"] if tree_given else condition_trees.tree_data(rule)
        actions = data["actions"] if actions_given else _actions_data(old_actions)
        built_tree = condition_trees.build_condition_tree(rule, tree, errors)
        built_actions = _build_actions(rule, actions, old_actions=old_actions, errors=errors)
        errors.raise_if_any()
        rule.revision += 1
        _save_rule(rule)
        if tree_given:
            for group in rule.condition_groups.filter(parent__isnull=True):
                group.delete()  # cascades to subgroups and conditions
            condition_trees.save_tree(rule, built_tree)
        if actions_given:
            for action in old_actions:
                action.delete()
            _save_actions(rule, built_actions)
        logger.info("rule %s updated to revision %s", rule.pk, rule.revision)
        return rule


def delete_rule(rule: AutomationRule, *, user=None) -> AutomationRule:
    """Soft delete: the rule stops firing and disappears from the API; its logs keep it."""
    with _acting(user), transaction.atomic():
        rule = AutomationRule.objects.select_for_update().get(pk=rule.pk, deleted_at__isnull=True)
        rule.deleted_at = timezone.now()
        rule.revision += 1
        rule.save(update_fields=["deleted_at", "revision", "updated_at", "updated_by"])
        logger.info("rule %s deleted", rule.pk)
        return rule


# --- Rule fields ---------------------------------------------------------------------------------


def _acting(user):
    """Act as `user` when given (tests, scripts); otherwise keep the request's acting user."""
    return acting_as(user if user is not None else get_current_user())


def _apply_rule_fields(rule, data, names, errors) -> None:
    for name in names:
        if name not in data:
            continue
        value = data[name]
        if name == "schedule":
            value = value or ""
        elif name == "watched_fields":
            value = list(value or [])
        elif name in ("description", "webhook_secret") and value is None:
            value = ""
        elif name == "hold_for":
            value = _hold_length(value, errors)
            rule.refused_hold = "holdFor" in errors
        setattr(rule, name, value)


def _hold_length(text, errors) -> datetime.timedelta | None:
    """holdFor's ISO 8601 duration as a length of time; "" or None: no hold. A duration that
    is not one is reported at holdFor (and the rule is checked as if it had no hold)."""
    if text in (None, ""):
        return None
    try:
        return length_of(text, datetime.timedelta(seconds=settings.AUTOMATION_MAX_WAIT_SECONDS))
    except ValueError as exc:
        errors.add("holdFor", [str(exc)])
        return None


def _apply_model(rule, data, errors) -> None:
    if "model" not in data:
        return
    label = data["model"]
    if not label:
        rule.content_type = None
        return
    try:
        entry = get_automatable(label)
    except LookupError as exc:
        errors.add("model", [str(exc)])
        rule.content_type = None
        rule.refused_model = str(label)
        return
    rule.content_type = ContentType.objects.get_for_model(entry.model)


def _validate_rule(rule, errors) -> None:
    try:
        rule.full_clean(validate_constraints=False)
    except ValidationError as exc:
        found = exc.message_dict
        if "model" in errors:
            # The unknown model is already reported; "needs a model" would only add noise.
            found.pop("content_type", None)
        if found:
            errors.add_validation_error(ValidationError(found), "", RULE_FIELD_PATHS)
    try:
        rule.validate_constraints()
    except ValidationError as exc:
        # The only constraint of a rule is its unique live name within the organization.
        errors.add("name", exc.messages)


def _save_rule(rule) -> None:
    try:
        with transaction.atomic():
            rule.save()
    except IntegrityError:
        # Another request took the name between our check and our write.
        raise ValidationError(
            {"name": ["A rule with this name already exists in the organization."]}
        ) from None


# --- Actions -------------------------------------------------------------------------------------


def _build_actions(rule, specs, *, old_actions, errors) -> list[RuleAction]:
    from automation.actions.base import parameters_bulk_errors
    from automation.actions.handlers import merge_masked_secrets

    if len(specs) > MAX_ACTIONS:
        errors.add("actions", [f"A rule has at most {MAX_ACTIONS} actions."])
        return []
    actions = []
    for index, spec in enumerate(specs):
        path = f"actions.{index}"
        parameters = spec.get("parameters")
        if not isinstance(parameters, dict):
            errors.add(f"{path}.parameters", ["Parameters are a JSON object."])
            continue
        bulk = parameters_bulk_errors(parameters)  # before anything walks them recursively
        if bulk:
            errors.add(f"{path}.parameters", bulk[""])
            continue
        action_type = spec.get("action_type")
        old = old_actions[index] if index < len(old_actions) else None
        if old is not None:
            parameters, unkept = merge_masked_secrets(
                action_type, parameters, old.action_type, old.parameters
            )
            for key, messages in unkept.items():
                errors.add(f"{path}.parameters.{key}", messages)
        action = RuleAction(
            rule=rule,
            action_type=action_type,
            parameters=parameters,
            order=index,
            continue_on_failure=bool(spec.get("continue_on_failure")),
            when=condition_trees.build_when(rule, spec.get("when"), index, errors),
        )
        try:
            condition_trees.full_clean(action, check_action, exclude=["rule"])
        except ValidationError as exc:
            errors.add_validation_error(exc, path, ACTION_FIELD_PATHS)
        actions.append(action)
    return actions


def _actions_data(actions) -> list[dict]:
    return [
        {
            "action_type": a.action_type,
            "parameters": a.parameters,
            "continue_on_failure": a.continue_on_failure,
            "when": a.when,
        }
        for a in actions
    ]


def _save_actions(rule, actions) -> None:
    for action in actions:
        action.rule = rule
        action.save()


# --- Checks of a condition and an action beyond their fields --------------------------------------


def check_action(action: RuleAction) -> None:
    """The action type's own check of its parameters (parameter_errors)."""
    from automation.actions.handlers import parameter_errors  # httpx too: loaded when used

    errors = parameter_errors(action.action_type, action.parameters, action.rule, action.order)
    if errors:
        raise ValidationError(
            {f"parameters.{path}" if path else "parameters": msgs for path, msgs in errors.items()}
        )
