"""The publish hook: every state change of a run, of an action and every new notification.

The engine calls these functions; they send the serialized payload to channel-layer groups after
the surrounding transaction commits, so a subscriber never sees a state that was rolled back, and
no subscriber needs a database query to render it. Each message carries the log's `seq`, so a
client can drop a stale message when two processes publish close together.
"""

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from automation.snapshots import json_value

logger = logging.getLogger("automation.live")

LOG_MESSAGE = "automation.log"
ACTION_MESSAGE = "automation.action"
NOTIFICATION_MESSAGE = "automation.notification"


def organization_group(organization_id) -> str:
    return f"automation.org.{organization_id}"


def user_group(user_id) -> str:
    return f"automation.user.{user_id}"


def serialize_log(log) -> dict:
    """The run as JSON, with everything the AutomationLog subscription type reads from a message."""
    return {
        "id": log.pk,
        "seq": log.seq,
        "organization_id": log.organization_id,
        "rule": {"id": log.rule_id, "name": log.rule.name},
        "rule_revision": log.rule_revision,
        "trigger": log.trigger,
        "event": log.event,
        "object_type": log.object_type,
        "object_id": log.object_id,
        "status": log.status,
        "dry_run": log.dry_run,
        "conditions_met": log.conditions_met,
        "condition_trace": log.condition_trace,
        "changes": log.changes,
        "context": log.context,
        "action_logs": log.action_logs,
        "error": log.error,
        "triggered_by_id": log.triggered_by_id,
        "scheduled_for": json_value(log.scheduled_for),
        "parent_log_id": log.parent_log_id,
        "root_log_id": log.root_log_id,
        "depth": log.depth,
        "retry_of_id": log.retry_of_id,
        "created_at": json_value(log.created_at),
        "started_at": json_value(log.started_at),
        "finished_at": json_value(log.finished_at),
        "duration_ms": log.duration_ms,
    }


def _send(group: str, message: dict) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, message)
    except Exception:
        # A live event is a convenience; the log row is the record. Never fail a run over it.
        logger.exception("could not publish %s to %s", message.get("type"), group)


def publish_log(log) -> None:
    """Publish the run's current state (after commit)."""
    message = {"type": LOG_MESSAGE, "log": serialize_log(log)}
    group = organization_group(log.organization_id)
    transaction.on_commit(lambda: _send(group, message))


def publish_action(log, entry: dict) -> None:
    """Publish one action entry's new state (after commit)."""
    message = {
        "type": ACTION_MESSAGE,
        "organization_id": log.organization_id,
        "log_id": log.pk,
        "rule_id": log.rule_id,
        "seq": log.seq,
        "action": dict(entry),
    }
    group = organization_group(log.organization_id)
    transaction.on_commit(lambda: _send(group, message))


def publish_notification(notification) -> None:
    message = {
        "type": NOTIFICATION_MESSAGE,
        "notification": {
            "id": notification.pk,
            "organization_id": notification.organization_id,
            "recipient_id": notification.recipient_id,
            "title": notification.title,
            "body": notification.body,
            "created_at": json_value(notification.created_at),
            "read_at": json_value(notification.read_at),
            "log_id": notification.log_id,
        },
    }
    group = user_group(notification.recipient_id)
    transaction.on_commit(lambda: _send(group, message))
