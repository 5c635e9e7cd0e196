"""The action registry: one handler per ActionType, with its parameter schema, save-time
validation, execution and dry run.

The run engine (automation/runs/plan.py) and the API only talk to this module:
`get_handler(action_type)` / `registered_handlers()`, `parameter_errors()` (rules.services.check_action),
`mask_parameters()` wherever parameters are shown, and `merge_masked_secrets()` when an update
echoes "********" back. The contract's header ("ACTION PARAMETERS") is the specification.

Rules of every handler:
- Only the parameters the contract names are templates (see `templated` in each handler); they
  are rendered against `ctx.template_variables()`, plain JSON, never live model instances.
- Database handlers do not manage transactions (the run wraps each in one, with its log entry),
  touch only records of `ctx.organization_id`, only automatable models and only `writable`
  fields, and save through `instance.save()` / `instance.delete()` so signals fire, after
  `spend_write(ctx)` has counted the write against the fan-out budgets (automation/fanout/budget.py).
- A failure the user should read raises ActionError; its message names the parameter or field.
- `dry_run` renders and validates everything and describes the action, writing and sending
  nothing; secrets are masked in what it returns.
"""

import copy
import logging

from automation.actions.base import (
    MASK,
    ActionHandler,
    add_message,
    join_path,
    secret_locations,
    value_at,
)
from automation.actions.call_webhook import CallWebhookHandler
from automation.actions.notify import SendNotificationHandler
from automation.actions.records import CreateRecordHandler, DeleteRecordHandler, UpdateRecordHandler
from automation.actions.send_email import SendEmailHandler
from automation.actions.wait import WaitHandler
from automation.core.choices import ActionType

logger = logging.getLogger("automation.actions.handlers")


_HANDLERS: dict[str, ActionHandler] = {
    handler.action_type: handler
    for handler in (
        CreateRecordHandler(),
        UpdateRecordHandler(),
        DeleteRecordHandler(),
        SendNotificationHandler(),
        CallWebhookHandler(),
        SendEmailHandler(),
        WaitHandler(),
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
    for container, key, keys in secret_locations(merged, handler.secret_paths):
        if container[key] != MASK:
            continue
        stored = value_at(old_parameters, keys)
        if stored is None:
            continue
        if changed:
            del container[key]
            add_message(errors, join_path(*keys), f"The {changed} changed: send this secret again.")
        else:
            container[key] = stored
    return merged, errors
