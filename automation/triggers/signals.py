"""Model-event triggers: the signal receivers that turn saves and deletes into runs.

Connected by AutomationConfig.ready():
- on every automatable model (automation.core.registry), post_save -> CREATED / UPDATED and
  post_delete -> DELETED, each calling the outbox's `emit_event`. A `pre_save` reads the old row
  (one query) only when some active UPDATED rule of the record's organization watches the model,
  so that `changes` holds every changed field with its old and new value. A save no rule watches
  costs no query: the rule index answers from memory.
- on AutomationRule, RuleCondition, ConditionGroup and RuleAction, post_save / post_delete mark the
  rule index stale (the version bumps on commit), and a pre_save on AutomationRule keeps
  next_run_at right (automation.triggers.schedules).

Not seen by signals: QuerySet.update(), bulk_create(), bulk_update(), and rows changed by database
cascades (on_delete=SET_NULL); code that writes that way calls `emit_event` itself
(docs/design.md, "Triggers").
Fixture loading (raw=True) fires nothing.
"""

import logging

from django.db.models.signals import post_delete, post_save, pre_save

from automation.core.choices import TriggerEvent
from automation.core.models import AutomationRule, ConditionGroup, RuleAction, RuleCondition
from automation.core.registry import automatable_models, model_registered
from automation.core.snapshots import diff, snapshot
from automation.index.watching import (
    STORED_SNAPSHOT_ATTR,
    is_watched,
    rules_changed,
    watched_anywhere,
)
from automation.triggers.outbox import emit_event

logger = logging.getLogger("automation.triggers.signals")

# Stashed on the instance between pre_save and post_save: the old row's snapshot, None when there
# is none to compare, or UNWATCHED when no UPDATED rule watched the save (so post_save need not
# ask the index again). A few dictionary operations: this runs on every save of the system.
PRE_SAVE_ATTR = "_automation_pre_save"
UNWATCHED = object()
_MISSING = object()
DISPATCH_PREFIX = "automation.triggers.signals"
# Looked up on every save: the model's label (Options.label_lower formats it on each access)
# and the event, as plain module globals.
_labels: dict[type, str] = {}
_owners: dict[type, object] = {}  # model -> its AutomatableModel
_UPDATED = TriggerEvent.UPDATED


def read_old_row(sender, instance, raw=False, **kwargs):
    """pre_save: remember the stored row, but only when an UPDATED rule could use it."""
    state = instance.__dict__
    stored = state.pop(STORED_SNAPSHOT_ATTR, None)
    if raw or instance._state.adding:
        state[PRE_SAVE_ATTR] = None
        return
    # From the instance's own dict when loaded (the attribute goes through a descriptor); a
    # model owned through a relation asks its registration (which may read the related row).
    entry = _owners[sender]
    if entry.owns_organization:
        organization_id = state.get("organization_id", _MISSING)
        if organization_id is _MISSING:
            organization_id = getattr(instance, "organization_id", None)
    elif watched_anywhere(entry.label, _UPDATED):
        organization_id = entry.organization_id_of(instance)  # may read the related row
    else:
        organization_id = None  # no rule anywhere watches it: the related row stays unread
    if not is_watched(_labels[sender], _UPDATED, organization_id):
        state[PRE_SAVE_ATTR] = UNWATCHED
        return
    if stored is None and instance.pk is not None:
        old = sender._base_manager.filter(pk=instance.pk).first()
        stored = snapshot(old) if old is not None else None
    state[PRE_SAVE_ATTR] = stored


def on_save(sender, instance, created, raw=False, **kwargs):
    """post_save: CREATED or UPDATED (with the changed fields' old and new values)."""
    old = instance.__dict__.pop(PRE_SAVE_ATTR, None)
    if raw:
        return
    if created:
        emit_event(instance, TriggerEvent.CREATED)
        return
    if old is UNWATCHED:  # pre_save just asked the index: one lookup per save is enough
        return
    # Without the old row (nothing watched it at pre_save) changes stay unknown (None): rules
    # with watched fields then do not fire, rules without fire on any save.
    changes = diff(old, snapshot(instance)) if old is not None else None
    emit_event(instance, TriggerEvent.UPDATED, changes)


def on_delete(sender, instance, **kwargs):
    """post_delete: DELETED, with the record's last values in the run's snapshot."""
    emit_event(instance, TriggerEvent.DELETED)


def on_rule_change(sender, **kwargs):
    if kwargs.get("raw"):
        return
    rules_changed()


RULE_MODELS = (AutomationRule, ConditionGroup, RuleCondition, RuleAction)


def connect() -> None:
    """Connect every receiver (idempotent: each has a dispatch_uid)."""
    for entry in automatable_models().values():
        connect_model(entry)
    model_registered.connect(_on_model_registered, dispatch_uid=f"{DISPATCH_PREFIX}.registered")
    for model in RULE_MODELS:
        name = model._meta.model_name
        post_save.connect(
            on_rule_change, sender=model, dispatch_uid=f"{DISPATCH_PREFIX}.rules.save.{name}"
        )
        post_delete.connect(
            on_rule_change, sender=model, dispatch_uid=f"{DISPATCH_PREFIX}.rules.delete.{name}"
        )
    from automation.triggers.fire_times import keep_next_run_at, write_next_run_at

    pre_save.connect(
        keep_next_run_at, sender=AutomationRule, dispatch_uid=f"{DISPATCH_PREFIX}.schedule.pre"
    )
    post_save.connect(
        write_next_run_at, sender=AutomationRule, dispatch_uid=f"{DISPATCH_PREFIX}.schedule.post"
    )


def connect_model(entry) -> None:
    """The model-event receivers of one automatable model."""
    label = entry.label
    _labels[entry.model] = label
    _owners[entry.model] = entry
    pre_save.connect(
        read_old_row, sender=entry.model, dispatch_uid=f"{DISPATCH_PREFIX}.pre_save.{label}"
    )
    post_save.connect(
        on_save, sender=entry.model, dispatch_uid=f"{DISPATCH_PREFIX}.post_save.{label}"
    )
    post_delete.connect(
        on_delete, sender=entry.model, dispatch_uid=f"{DISPATCH_PREFIX}.post_delete.{label}"
    )


def _on_model_registered(sender, entry, **kwargs):
    """A model registered after start-up (an app later in INSTALLED_APPS than automation)."""
    connect_model(entry)


def disconnect() -> None:
    """Undo connect() (tests: measure a save with no automation at all)."""
    for entry in automatable_models().values():
        label = entry.label
        pre_save.disconnect(sender=entry.model, dispatch_uid=f"{DISPATCH_PREFIX}.pre_save.{label}")
        post_save.disconnect(
            sender=entry.model, dispatch_uid=f"{DISPATCH_PREFIX}.post_save.{label}"
        )
        post_delete.disconnect(
            sender=entry.model, dispatch_uid=f"{DISPATCH_PREFIX}.post_delete.{label}"
        )
