"""The engine's public surface: what other apps (`graphql_api`, `catalog`) use, and nothing else
of `automation` (import-linter checks it). Each name says where it lives; the parts that pull in
heavy dependencies (the action handlers load httpx) are loaded when first called.
"""

from automation.core import choices, keyset
from automation.core.context import local_isoformat
from automation.core.durations import iso_duration
from automation.core.models import (
    AutomationLog,
    AutomationRule,
    ConditionGroup,
    RuleAction,
    RuleCondition,
)
from automation.core.registry import (
    automatable_models,
    get_automatable,
    model_label,
    readable_paths,
    register,
)
from automation.core.snapshots import snapshot as record_snapshot
from automation.index.watching import remember_stored_row
from automation.live import events as live
from automation.live import journal as stream
from automation.rules.services import MAX_ACTIONS, create_rule, delete_rule, update_rule
from automation.rules.webhooks import rotate_webhook
from automation.runs.manual import RunConflict, RunObjectNotFound, retry_run, run_rule
from automation.triggers.fire_times import upcoming_runs
from automation.triggers.outbox import emit_event
from automation.triggers.schedules import fire_now, fires_by_hand

__all__ = [
    "MAX_ACTIONS",
    "AutomationLog",
    "AutomationRule",
    "ConditionGroup",
    "RuleAction",
    "RuleCondition",
    "RunConflict",
    "RunObjectNotFound",
    "automatable_models",
    "choices",
    "create_rule",
    "delete_rule",
    "emit_event",
    "fire_now",
    "fires_by_hand",
    "get_automatable",
    "iso_duration",
    "keyset",
    "live",
    "local_isoformat",
    "mask_parameters",
    "model_label",
    "readable_paths",
    "record_snapshot",
    "register",
    "registered_handlers",
    "remember_stored_row",
    "retry_run",
    "rotate_webhook",
    "run_rule",
    "stream",
    "update_rule",
    "upcoming_runs",
]


def registered_handlers():
    """Every action type's handler, in the order of ActionType (actionTypes)."""
    from automation.actions.handlers import registered_handlers

    return registered_handlers()


def mask_parameters(action_type, parameters):
    """A copy of an action's parameters with its secrets masked, for anything shown."""
    from automation.actions.handlers import mask_parameters

    return mask_parameters(action_type, parameters)
