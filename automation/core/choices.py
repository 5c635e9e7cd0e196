"""Choices of the engine. Stored values are the GraphQL contract's enum names."""

from django.db import models


class TriggerType(models.TextChoices):
    EVENT = "EVENT", "Model event"
    SCHEDULE = "SCHEDULE", "Schedule"
    MANUAL = "MANUAL", "Manual"
    WEBHOOK = "WEBHOOK", "Webhook"


class TriggerEvent(models.TextChoices):
    CREATED = "CREATED", "Created"
    UPDATED = "UPDATED", "Updated"
    DELETED = "DELETED", "Deleted"


class ConditionLogic(models.TextChoices):
    AND = "AND", "All (AND)"
    OR = "OR", "Any (OR)"


class Operator(models.TextChoices):
    EQUALS = "EQUALS", "equals"
    NOT_EQUALS = "NOT_EQUALS", "does not equal"
    GREATER_THAN = "GREATER_THAN", "greater than"
    GREATER_THAN_OR_EQUAL = "GREATER_THAN_OR_EQUAL", "greater than or equal"
    LESS_THAN = "LESS_THAN", "less than"
    LESS_THAN_OR_EQUAL = "LESS_THAN_OR_EQUAL", "less than or equal"
    CONTAINS = "CONTAINS", "contains"
    NOT_CONTAINS = "NOT_CONTAINS", "does not contain"
    ICONTAINS = "ICONTAINS", "contains (case-insensitive)"
    STARTS_WITH = "STARTS_WITH", "starts with"
    ENDS_WITH = "ENDS_WITH", "ends with"
    REGEX = "REGEX", "matches regex"
    IN = "IN", "is one of"
    NOT_IN = "NOT_IN", "is not one of"
    IS_NULL = "IS_NULL", "is null"
    IS_NOT_NULL = "IS_NOT_NULL", "is not null"
    CHANGED = "CHANGED", "changed"
    CHANGED_FROM = "CHANGED_FROM", "changed from"
    CHANGED_TO = "CHANGED_TO", "changed to"
    CROSSED_BELOW = "CROSSED_BELOW", "crossed below"
    CROSSED_ABOVE = "CROSSED_ABOVE", "crossed above"


# Every operator's value, built once: `Operator.values` builds its list again on each use, and a
# run's evaluation asks for every condition.
OPERATORS = frozenset(Operator.values)
CHANGE_OPERATORS = {Operator.CHANGED, Operator.CHANGED_FROM, Operator.CHANGED_TO}
# Compare the value before the write and the value after it (numbers and dates).
CROSSING_OPERATORS = {Operator.CROSSED_BELOW, Operator.CROSSED_ABOVE}
VALUELESS_OPERATORS = {Operator.IS_NULL, Operator.IS_NOT_NULL, Operator.CHANGED}
LIST_OPERATORS = {Operator.IN, Operator.NOT_IN}


class ActionType(models.TextChoices):
    CREATE_RECORD = "CREATE_RECORD", "Create a record"
    UPDATE_RECORD = "UPDATE_RECORD", "Update a record"
    DELETE_RECORD = "DELETE_RECORD", "Delete a record"
    SEND_NOTIFICATION = "SEND_NOTIFICATION", "Send a notification"
    CALL_WEBHOOK = "CALL_WEBHOOK", "Call a webhook"
    SEND_EMAIL = "SEND_EMAIL", "Send an e-mail"
    WAIT = "WAIT", "Wait"


class RunStatus(models.TextChoices):
    PENDING = "PENDING", "Pending"
    RUNNING = "RUNNING", "Running"
    # Paused until its `resume_at` (a rule's holdFor, a WAIT action): held by no worker, woken
    # by runs/waits.py. Not finished: never purged, never retried.
    WAITING = "WAITING", "Waiting"
    SUCCEEDED = "SUCCEEDED", "Succeeded"
    PARTIAL = "PARTIAL", "Partially succeeded"
    FAILED = "FAILED", "Failed"
    SKIPPED = "SKIPPED", "Skipped"


FINISHED_RUN_STATUSES = {
    RunStatus.SUCCEEDED,
    RunStatus.PARTIAL,
    RunStatus.FAILED,
    RunStatus.SKIPPED,
}


class ActionStatus(models.TextChoices):
    PENDING = "PENDING", "Pending"
    RUNNING = "RUNNING", "Running"
    WAITING = "WAITING", "Waiting"  # a WAIT action whose run waits for its time
    SUCCEEDED = "SUCCEEDED", "Succeeded"
    FAILED = "FAILED", "Failed"
    SKIPPED = "SKIPPED", "Skipped"


class MissedRunPolicy(models.TextChoices):
    LATEST = "LATEST", "Run once for the latest missed slot"
    SKIP = "SKIP", "Skip missed slots"
    ALL = "ALL", "Run every missed slot (bounded)"
