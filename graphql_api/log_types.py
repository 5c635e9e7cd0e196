"""The GraphQL types of runs: a run's log with its condition trace and action entries, the
logs' keyset pages, and notifications."""

import datetime

import strawberry
import strawberry_django
from strawberry.scalars import JSON

from accounts import models as accounts_models
from automation import api as automation_models
from graphql_api.types import (
    ActionStatus,
    ActionType,
    Operator,
    OrganizationType,
    RuleType,
    RunStatus,
    TriggerEvent,
    TriggerType,
    UserType,
    label_of,
    scoped_to_memberships,
)


def _as_datetime(value) -> datetime.datetime | None:
    if not value:
        return None
    if isinstance(value, datetime.datetime):
        return value
    return datetime.datetime.fromisoformat(value)


@strawberry.type(name="ConditionTrace")
class ConditionTraceEntry:
    path: str
    field: str
    operator: Operator
    expected: JSON | None
    actual: JSON | None
    passed: bool
    error: str | None
    resolved_expected: JSON | None = strawberry.field(
        default=None,
        description='What a relative `expected` value ("now", "-P7D") stood for when the '
        "condition was evaluated: an ISO 8601 date-time (UTC) or date, or the list with each "
        "relative item resolved. Null when `expected` is not relative.",
    )
    previous: bool = strawberry.field(
        default=False,
        description="The condition tested the record as it was before the write (`previous: "
        "true`): it compared `actualPrevious` (with `expectedPrevious` when it has a "
        "valueField).",
    )
    value_field: str | None = strawberry.field(
        default=None,
        description="The field the condition compared with; `expected` is that field's value.",
    )
    actual_previous: JSON | None = strawberry.field(
        default=None,
        description="The field's value before the write, for the conditions that read it "
        "(`previous: true`, CROSSED_BELOW, CROSSED_ABOVE); `actual` is its value after.",
    )
    expected_previous: JSON | None = strawberry.field(
        default=None,
        description="The valueField's value before the write, for the conditions that read it; "
        "`expected` is its value after.",
    )

    @classmethod
    def from_json(cls, entry: dict) -> "ConditionTraceEntry":
        return cls(
            path=entry.get("path", ""),
            field=entry.get("field", ""),
            operator=Operator(entry["operator"]),
            expected=entry.get("expected"),
            actual=entry.get("actual"),
            passed=bool(entry.get("passed")),
            error=entry.get("error") or None,
            resolved_expected=entry.get("resolved_expected"),
            previous=bool(entry.get("previous")),
            value_field=entry.get("value_field"),
            actual_previous=entry.get("actual_previous"),
            expected_previous=entry.get("expected_previous"),
        )


@strawberry.type(name="ActionLog")
class ActionLogEntry:
    order: int
    action_type: ActionType
    status: ActionStatus
    attempt: int
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    duration_ms: float | None
    result: JSON | None
    error: str | None
    when_met: bool | None = strawberry.field(
        default=None,
        description="Whether the action's `when` was met when its turn came; null when it has "
        "none or was not reached.",
    )
    when_trace: list[ConditionTraceEntry] = strawberry.field(
        default_factory=list,
        description="One entry per condition of the action's `when`, as conditionTrace (paths "
        "like actions.1.when.conditions.0); empty when it has none or was not reached.",
    )

    @classmethod
    def from_json(cls, entry: dict) -> "ActionLogEntry":
        return cls(
            order=entry.get("order", 0),
            action_type=ActionType(entry["action_type"]),
            status=ActionStatus(entry.get("status", "PENDING")),
            attempt=entry.get("attempt") or 0,
            started_at=_as_datetime(entry.get("started_at")),
            finished_at=_as_datetime(entry.get("finished_at")),
            duration_ms=entry.get("duration_ms"),
            result=entry.get("result"),
            error=entry.get("error") or None,
            when_met=entry.get("when_met"),
            when_trace=[ConditionTraceEntry.from_json(e) for e in entry.get("when_trace") or []],
        )


@strawberry.type(
    name="RunHold",
    description="A run that held (its rule's holdFor): the second check of its conditions.",
)
class RunHold:
    hold_for: str = strawberry.field(description='The rule\'s holdFor then ("PT30M").')
    until: datetime.datetime | None = strawberry.field(
        description="When the conditions are (were) checked again; in a dry run, when they "
        "would be (a dry run does not wait)."
    )
    checked_at: datetime.datetime | None = strawberry.field(
        description="When they were checked again; null until then, and in a dry run."
    )
    met: bool | None = strawberry.field(
        description="Whether they still held (false also when the record was deleted); null "
        "until then."
    )
    trace: list[ConditionTraceEntry] = strawberry.field(
        description="The second check, entry by entry as conditionTrace (which keeps the first)."
    )
    note: str | None = strawberry.field(description="A dry run's: what a real run would do.")

    @classmethod
    def from_json(cls, hold: dict) -> "RunHold":
        return cls(
            hold_for=hold.get("hold_for") or "",
            until=_as_datetime(hold.get("until")),
            checked_at=_as_datetime(hold.get("checked_at")),
            met=hold.get("met"),
            trace=[ConditionTraceEntry.from_json(entry) for entry in hold.get("trace") or []],
            note=hold.get("note"),
        )


@strawberry_django.type(automation_models.AutomationLog, name="AutomationLog")
class AutomationLogType:
    id: strawberry.ID
    seq: int
    organization: OrganizationType
    rule: RuleType
    rule_revision: int
    trigger: TriggerType
    event: TriggerEvent | None
    status: RunStatus
    dry_run: bool
    conditions_met: bool | None
    changes: JSON | None
    context: JSON | None
    triggered_by: UserType | None
    scheduled_for: datetime.datetime | None
    resume_at: datetime.datetime | None = strawberry_django.field(
        description="WAITING: when the run goes on (the end of its hold or of a WAIT action); "
        "afterwards, when it last did. Null for a run that never waited."
    )
    parent_log: "AutomationLogType | None"
    root_log: "AutomationLogType | None"
    depth: int
    retry_of: "AutomationLogType | None"
    created_at: datetime.datetime
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None

    @classmethod
    def get_queryset(cls, queryset, info, **kwargs):
        return scoped_to_memberships(queryset, info)

    @strawberry_django.field(only=["content_type_id"])
    def object_type(self) -> str | None:
        return label_of(self.content_type_id)

    @strawberry_django.field(only=["object_id"])
    def object_id(self) -> strawberry.ID | None:
        return strawberry.ID(self.object_id) if self.object_id not in (None, "") else None

    @strawberry_django.field(only=["condition_trace"])
    def condition_trace(self) -> list[ConditionTraceEntry]:
        return [ConditionTraceEntry.from_json(entry) for entry in self.condition_trace or []]

    @strawberry_django.field(only=["action_logs"])
    def action_logs(self) -> list[ActionLogEntry]:
        return [ActionLogEntry.from_json(entry) for entry in self.action_logs or []]

    @strawberry_django.field(
        only=["hold"],
        description="A run of a rule with holdFor, once its conditions were met: the hold and "
        "its second check; null otherwise.",
    )
    def hold(self) -> RunHold | None:
        return RunHold.from_json(self.hold) if self.hold else None

    @strawberry_django.field(only=["error"])
    def error(self) -> str | None:
        return self.error or None

    @strawberry_django.field(only=["started_at", "finished_at"])
    def duration_ms(self) -> float | None:
        return self.duration_ms

    @strawberry_django.field(
        only=["organization_id"],
        description=(
            "The run's place in its organization's stream (opaque): a live event's own cursor; "
            "on a queried run, the cursor of its latest event. Subscribe with `after` to get "
            "what came after it."
        ),
    )
    def cursor(self) -> str:
        return automation_models.stream.log_cursor(self)


@strawberry_django.type(accounts_models.Notification, name="Notification")
class NotificationType:
    id: strawberry.ID
    title: str
    body: str
    created_at: datetime.datetime
    read_at: datetime.datetime | None
    log: AutomationLogType | None

    @classmethod
    def get_queryset(cls, queryset, info, **kwargs):
        from graphql_api.permissions import own_notifications

        return own_notifications(info, queryset)


@strawberry.type(name="PageInfo")
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type(name="LogEdge")
class LogEdge:
    cursor: str
    node: AutomationLogType


@strawberry.type(name="LogConnection", description="Keyset cursors, stable under inserts.")
class LogConnection:
    edges: list[LogEdge]
    page_info: PageInfo
    stream_cursor: str | None = strawberry.field(
        default=None,
        description=(
            "The organization's latest stream cursor, read before this page: subscribe with "
            "`after: streamCursor` to get every event from there, none missed. Null without "
            "`organization`."
        ),
    )
    # graphql_api.pagination.BoundedCount: counts on first use, so only when selected.
    count: strawberry.Private[object] = None

    @strawberry.field(
        description=(
            "How many logs match the filter (the whole filter, not what is left after `after`), "
            "counted up to 10,000: past that it is 10,000 and `totalCountExact` is false, read "
            '"at least 10,000". Counted only when selected.'
        )
    )
    def total_count(self) -> int:
        return self.count.value

    @strawberry.field(
        description="False when more logs match than `totalCount` says (it stopped at its cap)."
    )
    def total_count_exact(self) -> bool:
        return self.count.exact
