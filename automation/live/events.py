"""The publish hook: every state change of a run, of an action and every new notification.

The engine calls publish_log / publish_action / publish_notification; they send the serialized
payload to channel-layer groups after the surrounding transaction commits, so a subscriber never
sees a state that was rolled back, and no subscriber needs a database query to render it. Each
message carries the log's `seq`, so a client can drop a stale message when two processes publish
close together.

Groups and message types (graphql_api/subscriptions.py listens to them):

    automation.org.<id>    "automation.log", "automation.action"     every run of the organization
    automation.user.<id>   "automation.notification"                 the user's notifications

Run and action events form the organization's stream (automation/live/journal.py): each is
journaled in the transaction that published it, numbered in commit order, and sent with its
"position" (the cursor subscribers see). They go to the organization's group only: a
subscriber needs every position of the organization to tell a late or lost message from one
that is not for it (graphql_api/stream.py).

Delivery order: messages leave in the order they were published. With the in-memory layer
(embedded mode) they must also be delivered on the event loop of the ASGI server, where the
subscribers' queues live: asyncio queues are not thread-safe, and the engine publishes from Huey
worker threads and Django's sync threads. The WebSocket consumer therefore registers its loop
(`attach_event_loop`), and sends are handed to that loop. Other layers (channels-redis) are sent
from one background loop per process, which keeps a single Redis connection and the order.
"""

import asyncio
import collections
import contextlib
import contextvars
import logging
import threading

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from channels_redis.pubsub import RedisPubSubChannelLayer
from django.db import transaction

from automation.core.snapshots import json_value
from automation.live import journal
from automation.live.journal import ACTION_MESSAGE, LOG_MESSAGE
from observability import metrics

logger = logging.getLogger("automation.live.events")

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
        "content_type_id": log.content_type_id,
        "object_type": log.object_type,
        "object_id": log.object_id,
        "status": log.status,
        "dry_run": log.dry_run,
        "conditions_met": log.conditions_met,
        "condition_trace": log.condition_trace,
        "changes": log.changes,
        "context": log.context,
        # The engine updates its action entries in place (never what they hold): copy them, as
        # the message waits for the commit and then for the event loop.
        "action_logs": (
            [dict(entry) for entry in log.action_logs] if log.action_logs is not None else None
        ),
        "error": log.error,
        "triggered_by_id": log.triggered_by_id,
        "scheduled_for": json_value(log.scheduled_for),
        "resume_at": json_value(log.resume_at),
        "hold": log.hold,
        "parent_log_id": log.parent_log_id,
        "root_log_id": log.root_log_id,
        "depth": log.depth,
        "retry_of_id": log.retry_of_id,
        "created_at": json_value(log.created_at),
        "started_at": json_value(log.started_at),
        "finished_at": json_value(log.finished_at),
        "duration_ms": log.duration_ms,
    }


def serialize_notification(notification) -> dict:
    return {
        "id": notification.pk,
        "organization_id": notification.organization_id,
        "recipient_id": notification.recipient_id,
        "title": notification.title,
        "body": notification.body,
        "created_at": json_value(notification.created_at),
        "read_at": json_value(notification.read_at),
        "log_id": notification.log_id,
    }


# --- Publishing ----------------------------------------------------------------------------------


class OrderedSender:
    """Runs the group sends handed to it one after another on one event loop.

    `submit` may be called from any thread; sends leave in submission order, whatever the layer.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self._pending: collections.deque = collections.deque()
        self._lock = threading.Lock()
        self._draining = False

    def usable(self) -> bool:
        return self.loop.is_running() and not self.loop.is_closed()

    def submit(self, layer, sends: list[tuple[str, dict]]) -> None:
        with self._lock:
            self._pending.append((layer, sends))
            if self._draining:
                return
            self._draining = True
        self.loop.call_soon_threadsafe(self._start_draining)

    def _start_draining(self) -> None:
        self.loop.create_task(self._drain())

    async def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._draining = False
                    return
                # Everything submitted meanwhile goes out together (a batch of runs commits many
                # state changes at once), in submission order.
                submitted = list(self._pending)
                self._pending.clear()
            for layer, sends in _by_layer(submitted):
                await _send_all(layer, sends)


def _by_layer(submitted: list) -> list:
    """Consecutive submissions to the same layer joined into one list of sends, in order."""
    joined: list = []
    for layer, sends in submitted:
        if joined and joined[-1][0] is layer:
            joined[-1][1].extend(sends)
        else:
            joined.append((layer, list(sends)))
    return joined


async def _send_all(layer, sends: list[tuple[str, dict]]) -> None:
    if len(sends) > 1 and isinstance(layer, RedisPubSubChannelLayer):
        try:
            await _publish_pipelined(layer, sends)
            return
        except _PipelineUnavailable:
            pass
    for group, message in sends:
        try:
            await layer.group_send(group, message)
        except Exception:
            # A live event is a convenience; the log row is the record. Never fail a run over it.
            logger.exception("could not publish %s to %s", message.get("type"), group)


class _PipelineUnavailable(Exception):
    """The layer's internals are not what _publish_pipelined expects (another version)."""


async def _publish_pipelined(layer, sends: list[tuple[str, dict]]) -> None:
    """group_send of each message, in order, as one Redis pipeline per shard: one round trip for
    a batch's hundreds of messages instead of one each, awaited in turn.

    This is what channels-redis 4.3's pub/sub layer does per group_send (a PUBLISH of the
    serialized message on the group's channel, under the shard's lock, which keeps the order),
    done with its internals; a version without them gets group_send (_PipelineUnavailable).
    """
    try:
        loop_layer = layer._get_layer()
        by_shard: dict = {}
        for group, message in sends:
            channel = loop_layer._get_group_channel_name(group)
            shard = loop_layer._get_shard(channel)
            by_shard.setdefault(shard, []).append((channel, layer.serialize(message)))
        for shard in by_shard:
            shard._lock, shard._ensure_redis  # noqa: B018 - fail here, before sending anything
    except AttributeError as exc:
        logger.warning("channels-redis internals changed (%s): publishing one by one", exc)
        raise _PipelineUnavailable from exc
    for shard, items in by_shard.items():
        try:
            async with shard._lock:
                shard._ensure_redis()
                pipeline = shard._redis.pipeline(transaction=False)
                for channel, data in items:
                    pipeline.publish(channel, data)
                await pipeline.execute()
        except Exception:
            # A live event is a convenience; the log row is the record. Never fail a run over it.
            logger.exception("could not publish %s live events", len(items))


_lock = threading.Lock()
_server_sender: OrderedSender | None = None
_background_sender: OrderedSender | None = None


def attach_event_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Deliver in-memory-layer messages on `loop` (the ASGI server's, where subscribers listen)."""
    global _server_sender
    with _lock:
        if _server_sender is None or _server_sender.loop is not loop:
            _server_sender = OrderedSender(loop)


def _background() -> OrderedSender:
    """This process's own publishing loop, started on first use (a daemon thread)."""
    global _background_sender
    with _lock:
        if _background_sender is None or not _background_sender.usable():
            loop = asyncio.new_event_loop()
            threading.Thread(
                target=loop.run_forever, name="automation-live-publisher", daemon=True
            ).start()
            _background_sender = OrderedSender(loop)
        return _background_sender


def _send(sends: list[tuple[str, dict]]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    _count(sends)
    if isinstance(layer, InMemoryChannelLayer):
        sender = _server_sender
        if sender is None or not sender.usable():
            # No server loop in this process (a script, a worker, a server before its first
            # WebSocket): no WebSocket subscriber here either; deliver synchronously to whatever
            # listens on this layer. async_to_sync starts a thread and a loop per call (most of
            # a run's cost in bench 2), so skip it when no target group has a member.
            if any(layer.groups.get(group) for group, _ in sends):
                async_to_sync(_send_all)(layer, sends)
            return
    else:
        sender = _background()
    sender.submit(layer, sends)


def _count(sends: list[tuple[str, dict]]) -> None:
    """Count the events published (automation_live_events_published_total), by type."""
    if len(sends) == 1:
        metrics.child(metrics.LIVE_EVENTS, sends[0][1]["type"]).inc()
        return
    for kind, number in collections.Counter(message["type"] for _, message in sends).items():
        metrics.child(metrics.LIVE_EVENTS, kind).inc(number)


class _Publication(journal.Events):
    """An on-commit callback: the stream events of one publication, journaled right before
    the commit (`before_commit`, called by the database backend, config/db.py) and sent to the
    organization's group after it."""

    before_commit = staticmethod(journal.before_commit)

    def __call__(self) -> None:
        if not self.journaled():
            # Committed without the backend's hook (or run by hand in a test): journal them
            # now, in a transaction of their own, so they are still numbered in commit order.
            try:
                journal.journal_now(self)
            except Exception:
                logger.exception("could not journal %s live events", len(self.pairs))
                return
        _send([(organization_group(org), message) for org, message in self.pairs])


class Held:
    """Publications held back by `hold()`; `publish()` hands them, in order, to the transaction
    open at that moment, to be sent after it commits."""

    def __init__(self):
        self.items: list[tuple[bool, list]] = []  # (stream events?, pairs or sends)

    def publish(self) -> None:
        items, self.items = self.items, []
        for is_stream, item in items:
            (_publish_stream if is_stream else _publish)(item)


_holding: contextvars.ContextVar[Held | None] = contextvars.ContextVar("held", default=None)


@contextlib.contextmanager
def hold():
    """Hold what is published inside the block instead of sending it after the commit of the
    transaction open there: for state worked out outside any transaction and written later (a
    dry run). Publications never handed on with `Held.publish()` are dropped, as a rolled-back
    transaction's would be."""
    held = Held()
    token = _holding.set(held)
    try:
        yield held
    finally:
        _holding.reset(token)


def _publish(sends: list[tuple[str, dict]]) -> None:
    # The payloads are snapshots already (serialize_log, publish_action copy what the engine
    # changes in place), so no deep copy per message.
    held = _holding.get()
    if held is not None:
        held.items.append((False, sends))
        return
    transaction.on_commit(lambda: _send(sends))


def _publish_stream(pairs: list[tuple[int, dict]]) -> None:
    """Publish stream events: journaled before the commit, sent after it."""
    held = _holding.get()
    if held is not None:
        held.items.append((True, pairs))
        return
    transaction.on_commit(_Publication(pairs))


def log_message(log) -> dict:
    """The stream message of the run's current state (a snapshot: later changes leave it be)."""
    return {"type": LOG_MESSAGE, "log": serialize_log(log)}


def publish_log(log) -> None:
    """Publish the run's current state (journaled, and sent after commit)."""
    publish_log_message(log.organization_id, log_message(log))


def publish_log_message(organization_id: int, message: dict) -> None:
    """Publish a `log_message` made earlier (journaled, and sent after commit)."""
    _publish_stream([(organization_id, message)])


def publish_action(log, entry: dict) -> None:
    """Publish one action entry's new state (journaled, and sent after commit)."""
    message = {
        "type": ACTION_MESSAGE,
        "organization_id": log.organization_id,
        "log_id": log.pk,
        "rule_id": log.rule_id,
        "seq": log.seq,
        "dry_run": log.dry_run,  # subscriptions leave dry runs out unless asked for
        "action": dict(entry),
    }
    _publish_stream([(log.organization_id, message)])


def publish_notification(notification) -> None:
    """Publish a new notification to its recipient (after commit)."""
    message = {
        "type": NOTIFICATION_MESSAGE,
        "notification": serialize_notification(notification),
    }
    _publish([(user_group(notification.recipient_id), message)])
