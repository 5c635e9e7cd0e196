"""The contract's Subscription type: runs, action updates and notifications as they happen.

Run and action subscriptions read their organization's stream (graphql_api/stream.py): in cursor
order, each event once, after an `after` cursor from the journal first, and filter on the
payload. A process joins each group once for all its subscriptions (graphql_api/fanout.py) and
orders each organization's events once for all of them.

A message is rendered without a database query: the payload becomes an unsaved model instance
(`instance_from`) with only the published fields loaded, built once per message for all the
subscriptions it is handed to, and the API's own strawberry-django types render it. A field
beyond the message (a relation such as `organization`, or a rule field other than id and name) is
a deferred field: reading it costs one query, as the contract says.

Access: a subscription to an organization the user is not a member of (or to a rule or run
outside it) fails with NOT_FOUND before it listens. Before each delivery the membership is
checked again (graphql_api/live_auth.py, cached for a second per connection); a user who lost it
gets NOT_FOUND and the subscription ends.
"""

import datetime
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Annotated

import strawberry
from django.db import DEFAULT_DB_ALIAS
from graphql import GraphQLError

from accounts.models import Notification
from automation.api import AutomationLog, AutomationRule, live
from automation.api import stream as live_stream
from graphql_api import stream
from graphql_api.errors import ApiError, NotFound, Unauthenticated
from graphql_api.fanout import fanout
from graphql_api.log_types import ActionLogEntry, AutomationLogType, NotificationType
from graphql_api.permissions import parse_id
from graphql_api.shared_render import shareable
from graphql_api.types import RunStatus
from observability import metrics

logger = logging.getLogger("graphql_api.subscriptions")

# Dry runs are tests of a rule: a live dashboard does not show them unless it asks.
INCLUDE_DRY_RUNS = Annotated[
    bool | None,
    strawberry.argument(description="Deliver dry runs too (runRule(dryRun: true)); default false."),
]

AFTER = Annotated[
    str | None,
    strawberry.argument(
        description=(
            "A cursor (an event's `cursor`, or `logs { streamCursor }`): first every matching "
            "event after it, oldest first, from the stream's journal, then live ones, with no "
            "gap and no duplicate. CURSOR_EXPIRED when it is older than the journal keeps."
        )
    ),
]

DATETIME_FIELDS = {
    "created_at",
    "started_at",
    "finished_at",
    "scheduled_for",
    "resume_at",
    "read_at",
}


@strawberry.type(name="ActionUpdate")
class ActionUpdate:
    log_id: strawberry.ID
    rule_id: strawberry.ID
    seq: int
    action: ActionLogEntry
    cursor: str = strawberry.field(
        description="This event's place in the organization's stream (opaque; see `after`)."
    )


def instance_from(model, data: dict):
    """An unsaved-looking instance of `model` holding the given field values (by attname).

    Built like a row from the database (`Model.from_db`), so any field not given is deferred and
    loads on first access, instead of silently reading a default.
    """
    present = [f for f in model._meta.concrete_fields if f.attname in data]
    values = []
    for field in present:
        value = data[field.attname]
        if field.attname in DATETIME_FIELDS and isinstance(value, str):
            value = datetime.datetime.fromisoformat(value)
        values.append(value)
    return model.from_db(DEFAULT_DB_ALIAS, [f.attname for f in present], values)


def log_from_message(payload: dict, position: int | None = None) -> AutomationLog:
    fields = {key: value for key, value in payload.items() if key != "rule"}
    fields["rule_id"] = payload["rule"]["id"]
    # Events published before runs could wait (still in the journal) have neither.
    fields.setdefault("resume_at", None)
    fields.setdefault("hold", None)
    log = instance_from(AutomationLog, fields)
    log.stream_position = position
    log.rule = instance_from(
        AutomationRule,
        {
            "id": payload["rule"]["id"],
            "name": payload["rule"]["name"],
            "organization_id": payload["organization_id"],
        },
    )
    return log


# What a subscription yields for a message: built once per message (LiveEvent.built) and
# rendered once per distinct subscription (graphql_api/shared_render.py).


def log_of(message: dict) -> AutomationLog:
    return shareable(log_from_message(message["log"], message.get("position")))


def action_update_of(message: dict) -> "ActionUpdate":
    return shareable(
        ActionUpdate(
            log_id=strawberry.ID(str(message["log_id"])),
            rule_id=strawberry.ID(str(message["rule_id"])),
            seq=message["seq"],
            action=ActionLogEntry.from_json(message["action"]),
            cursor=_cursor(message),
        )
    )


def _cursor(message: dict) -> str:
    position = message.get("position")
    if position is None:  # published by a process without the journal (during an upgrade)
        return ""
    return live_stream.encode(message["organization_id"], position)


def notification_of(message: dict) -> Notification:
    return shareable(instance_from(Notification, message["notification"]))


def located(info: strawberry.Info, exc: ApiError) -> GraphQLError:
    """The error, at the subscription field's path.

    Strawberry reports an exception raised inside a subscription's stream without a path, which
    the schema's error extension takes for an error before execution; with the path, it gets its
    public code (NOT_FOUND...), as it would in a query.
    """
    return GraphQLError(str(exc), path=info.path.as_list(), original_error=exc)


def _access(info: strawberry.Info):
    access = info.context["ws"].access
    if access is None:  # a legacy client that skipped connection_init
        raise Unauthenticated()
    return access


async def _member_organization(info: strawberry.Info, organization) -> int:
    organization_id = parse_id(organization)
    if await _access(info).role_in(organization_id) is None:
        raise NotFound()
    return organization_id


async def _still_member(info: strawberry.Info, organization_id: int) -> None:
    if await _access(info).role_in(organization_id) is None:
        logger.info(
            "user %s lost access to organization %s: ending a subscription",
            _access(info).user.pk,
            organization_id,
        )
        raise NotFound()


async def _after(organization_id: int, after: str | None) -> int | None:
    return None if after is None else stream.parse_after(after, organization_id)


async def stream_logs(
    info: strawberry.Info,
    organization: strawberry.ID,
    rule: strawberry.ID | None = None,
    statuses: list[RunStatus] | None = None,
    include_dry_runs: bool = False,
    after: str | None = None,
) -> AsyncGenerator[AutomationLogType, None]:
    organization_id = await _member_organization(info, organization)
    position = await _after(organization_id, after)
    rule_id = None
    if rule is not None:
        rule_id = parse_id(rule)
        in_organization = AutomationRule.objects.filter(pk=rule_id, organization_id=organization_id)
        if not await in_organization.aexists():
            raise NotFound()
    wanted = {RunStatus(status).value for status in statuses} if statuses else None

    types = frozenset({live_stream.LOG_MESSAGE})
    # Closed with this generator (aclosing): it leaves the organization's stream at once.
    async with aclosing(stream.events(organization_id, types, position)) as events:
        async for event in events:
            payload = event.message["log"]
            if payload["organization_id"] != organization_id:
                continue
            if rule_id is not None and payload["rule"]["id"] != rule_id:
                continue
            if wanted is not None and payload["status"] not in wanted:
                continue
            if payload["dry_run"] and not include_dry_runs:
                continue
            await _still_member(info, organization_id)
            yield event.built(log_of)


async def stream_action_updates(
    info: strawberry.Info,
    organization: strawberry.ID,
    rule: strawberry.ID | None = None,
    log: strawberry.ID | None = None,
    include_dry_runs: bool = False,
    after: str | None = None,
) -> AsyncGenerator[ActionUpdate, None]:
    organization_id = await _member_organization(info, organization)
    position = await _after(organization_id, after)
    rule_id = parse_id(rule) if rule is not None else None
    log_id = parse_id(log) if log is not None else None
    if rule_id is not None:
        rules = AutomationRule.objects.filter(pk=rule_id, organization_id=organization_id)
        if not await rules.aexists():
            raise NotFound()
    if log_id is not None:
        logs = AutomationLog.objects.filter(pk=log_id, organization_id=organization_id)
        if not await logs.aexists():
            raise NotFound()

    types = frozenset({live_stream.ACTION_MESSAGE})
    async with aclosing(stream.events(organization_id, types, position)) as events:
        async for event in events:
            message = event.message
            if message["organization_id"] != organization_id:
                continue
            if rule_id is not None and message["rule_id"] != rule_id:
                continue
            if log_id is not None and message["log_id"] != log_id:
                continue
            # A message published before dry runs were marked on it is a real run's.
            if message.get("dry_run", False) and not include_dry_runs:
                continue
            await _still_member(info, organization_id)
            yield event.built(action_update_of)


async def stream_notifications(info: strawberry.Info) -> AsyncGenerator[NotificationType, None]:
    user_id = _access(info).user.pk
    group = live.user_group(user_id)
    async with fanout().listen(live.NOTIFICATION_MESSAGE, group) as events:
        async for event in events:
            payload = event.message["notification"]
            if payload["recipient_id"] != user_id:
                continue
            # A notification of an organization the user has left is not theirs to see now.
            if await _access(info).role_in(payload["organization_id"]) is None:
                continue
            yield event.built(notification_of)


async def guarded(info: strawberry.Info, stream: AsyncGenerator) -> AsyncGenerator:
    """The stream's items; a public error ends it located at the field (see `located`). Open
    subscriptions are counted (automation_live_subscriptions) until they end, however."""
    metrics.LIVE_SUBSCRIPTIONS.inc()
    try:
        async with aclosing(stream):
            try:
                async for item in stream:
                    yield item
            except ApiError as exc:
                raise located(info, exc) from exc
    finally:
        metrics.LIVE_SUBSCRIPTIONS.dec()


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description=(
            "Every creation and status change of a run in scope, in cursor order; dry runs only "
            "with includeDryRuns: true. With `after`, the events after that cursor first."
        )
    )
    async def automation_logs(
        self,
        info: strawberry.Info,
        organization: strawberry.ID,
        rule: strawberry.ID | None = None,
        statuses: list[RunStatus] | None = None,
        include_dry_runs: INCLUDE_DRY_RUNS = False,
        after: AFTER = None,
    ) -> AsyncGenerator[AutomationLogType, None]:
        events = stream_logs(info, organization, rule, statuses, bool(include_dry_runs), after)
        async for log in guarded(info, events):
            yield log

    @strawberry.subscription(
        description=(
            "Every action status change as it executes, in cursor order; dry runs' only with "
            "includeDryRuns: true. With `after`, the events after that cursor first."
        )
    )
    async def action_updates(
        self,
        info: strawberry.Info,
        organization: strawberry.ID,
        rule: strawberry.ID | None = None,
        log: strawberry.ID | None = None,
        include_dry_runs: INCLUDE_DRY_RUNS = False,
        after: AFTER = None,
    ) -> AsyncGenerator[ActionUpdate, None]:
        events = stream_action_updates(info, organization, rule, log, bool(include_dry_runs), after)
        async for update in guarded(info, events):
            yield update

    @strawberry.subscription(description="The viewer's own notifications as they are created.")
    async def notifications(self, info: strawberry.Info) -> AsyncGenerator[NotificationType, None]:
        async for notification in guarded(info, stream_notifications(info)):
            yield notification
