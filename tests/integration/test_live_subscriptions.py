"""Subscriptions through the real ASGI application (in-memory channel layer, one event loop).

The run engine executes in a worker thread (sync_to_async), as it does in a Huey thread of
`manage.py serve`, so these tests also cover the hand-over of published messages to the
server's loop. Processes and real network clients: tests/e2e/test_subscriptions*.py.
"""

import asyncio
import gc
import json
import os
import uuid

import pytest
from asgiref.sync import sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from accounts.models import ApiToken, Membership
from automation.core.choices import ActionType
from automation.core.models import AutomationLog
from automation.live import events as live
from automation.live.events import LOG_MESSAGE, organization_group, serialize_log
from automation.runs.execute import execute_run
from automation.runs.manual import run_rule
from automation.triggers.outbox import emit_event
from config.asgi import application
from graphql_api import live_auth
from tests.factories import (
    AutomationRuleFactory,
    MembershipFactory,
    NotificationFactory,
    ProductFactory,
)

pytestmark = pytest.mark.django_db(transaction=True)

LOGS = """subscription Logs($org: ID!, $rule: ID, $statuses: [RunStatus!]) {
  automationLogs(organization: $org, rule: $rule, statuses: $statuses) {
    id seq status rule { id name } actionLogs { order status } objectType objectId
  }
}"""
ACTIONS = """subscription Actions($org: ID!, $log: ID) {
  actionUpdates(organization: $org, log: $log) { logId ruleId seq action { order status } }
}"""
TIMEOUT = 5


class Client:
    """A graphql-transport-ws client over channels' in-process communicator."""

    def __init__(self, token=None, protocol="graphql-transport-ws", payload=None, headers=()):
        self.ws = WebsocketCommunicator(
            application, "/graphql/", subprotocols=[protocol], headers=list(headers)
        )
        self.protocol = protocol
        self.payload = {"Authorization": f"Bearer {token}"} if token else (payload or {})

    async def connect(self):
        connected, _ = await self.ws.connect(TIMEOUT)
        assert connected
        await self.ws.send_json_to({"type": "connection_init", "payload": self.payload})
        return await self.ws.receive_output(TIMEOUT)

    async def subscribe(self, op_id, query, variables):
        kind = "subscribe" if self.protocol == "graphql-transport-ws" else "start"
        await self.ws.send_json_to(
            {"id": op_id, "type": kind, "payload": {"query": query, "variables": variables}}
        )

    async def receive(self, timeout=TIMEOUT):
        return await self.ws.receive_json_from(timeout)

    async def close(self):
        await self.ws.disconnect()


def update_description():
    return {
        "action_type": ActionType.UPDATE_RECORD,
        "parameters": {"fields": {"description": "Seen by {{ rule.name }}"}},
    }


@sync_to_async
def make_run(organization):
    """An EVENT rule with two update actions, and its PENDING run for a product update."""
    rule = AutomationRuleFactory(
        organization=organization, actions=[update_description(), update_description()]
    )
    product = ProductFactory(organization=organization, status="ACTIVE")
    (log,) = [
        log
        for log in emit_event(product, "UPDATED", {"status": {"old": "DRAFT", "new": "ACTIVE"}})
        if log.rule_id == rule.pk
    ]
    return rule, log


async def subscribed(client, op_id, query, variables):
    """Subscribe, then give the consumer a moment to join its group before anything publishes."""
    await client.subscribe(op_id, query, variables)
    await asyncio.sleep(0.1)


async def test_missing_bad_and_revoked_tokens_are_refused_with_4403_and_the_reason(editor):
    revoked = await sync_to_async(ApiToken.issue)(user=editor, name="old")
    await sync_to_async(revoked[0].revoke)()
    for payload, reason in (
        ({}, "No credentials: send"),
        ({"Authorization": "Bearer are_not-a-token"}, "Invalid token."),
        ({"Authorization": f"Bearer {revoked[1]}"}, "Revoked token."),
        ({"Authorization": "Basic abc"}, "Unsupported Authorization scheme: use"),
        ({"Authorization": "Token abc"}, "Unsupported Authorization scheme: use"),
        ({"Authorization": "Bearer "}, 'No token after "Bearer": use'),
        ({"Authorization": 42}, "Unsupported Authorization scheme: use"),
    ):
        client = Client(payload=payload)
        output = await client.connect()
        assert (output["type"], output.get("code")) == ("websocket.close", 4403), payload
        assert output["reason"].startswith(reason), (payload, output)
        assert len(output["reason"].encode()) <= 123  # the most a close frame carries


async def test_legacy_protocol_refusal_is_a_connection_error_with_the_reason():
    client = Client(payload={"Authorization": "Bearer are_wrong"}, protocol="graphql-ws")
    output = await client.connect()
    assert output["type"] == "websocket.send"
    assert json.loads(output["text"]) == {
        "type": "connection_error",
        "payload": {"message": "Invalid token.", "code": "UNAUTHENTICATED"},
    }


async def test_subscription_to_another_organization_is_not_found_and_completes(
    editor, other_organization
):
    client = Client(editor.raw_token)
    assert json.loads((await client.connect())["text"]) == {"type": "connection_ack"}
    await client.subscribe("1", LOGS, {"org": str(other_organization.pk)})
    first = await client.receive()
    assert first["type"] == "next"
    assert first["payload"]["data"] is None
    assert first["payload"]["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert await client.receive() == {"id": "1", "type": "complete"}
    await client.close()


async def test_run_is_streamed_in_order_and_other_organization_gets_nothing(
    organization, other_organization, editor, make_member
):
    outsider = await sync_to_async(make_member)(other_organization)
    watcher, stranger = Client(editor.raw_token), Client(outsider.raw_token)
    await watcher.connect()
    await stranger.connect()
    await subscribed(watcher, "logs", LOGS, {"org": str(organization.pk)})
    await subscribed(stranger, "logs", LOGS, {"org": str(other_organization.pk)})

    rule, log = await make_run(organization)
    await sync_to_async(execute_run)(log.pk)

    events = [(await watcher.receive())["payload"]["data"]["automationLogs"] for _ in range(3)]
    # Claimed with its conditions met and its plan recorded (one transaction, so one RUNNING
    # event at seq 2, the actions listed as PENDING), then 4 action steps (seq 3-6, sent as
    # actionUpdates), then the end.
    assert [(e["status"], e["seq"]) for e in events] == [
        ("PENDING", 0),
        ("RUNNING", 2),
        ("SUCCEEDED", 7),
    ]
    assert [a["status"] for a in events[1]["actionLogs"]] == ["PENDING", "PENDING"]
    assert {e["id"] for e in events} == {str(log.pk)}
    assert events[0]["rule"] == {"id": str(rule.pk), "name": rule.name}
    assert events[0]["objectType"] == "catalog.product"
    assert [a["status"] for a in events[2]["actionLogs"]] == ["SUCCEEDED", "SUCCEEDED"]
    assert await stranger.ws.receive_nothing(0.5)
    await watcher.close()
    await stranger.close()


async def test_action_updates_filtered_by_log_over_legacy_protocol(organization, editor):
    rule, log = await make_run(organization)
    _, other_log = await make_run(organization)
    client = Client(editor.raw_token, protocol="graphql-ws")
    assert '"connection_ack"' in (await client.connect())["text"]
    await subscribed(client, "a", ACTIONS, {"org": str(organization.pk), "log": str(log.pk)})

    await sync_to_async(execute_run)(other_log.pk)
    await sync_to_async(execute_run)(log.pk)

    updates = [(await client.receive())["payload"]["data"]["actionUpdates"] for _ in range(4)]
    assert [(u["action"]["order"], u["action"]["status"]) for u in updates] == [
        (0, "RUNNING"),
        (0, "SUCCEEDED"),
        (1, "RUNNING"),
        (1, "SUCCEEDED"),
    ]
    assert {u["logId"] for u in updates} == {str(log.pk)}
    assert {u["ruleId"] for u in updates} == {str(rule.pk)}
    seqs = [u["seq"] for u in updates]
    assert seqs == sorted(seqs)
    assert await client.ws.receive_nothing(0.5)
    await client.close()


async def test_statuses_filter(organization, editor):
    client = Client(editor.raw_token)
    await client.connect()
    await subscribed(
        client, "1", LOGS, {"org": str(organization.pk), "statuses": ["SUCCEEDED", "FAILED"]}
    )
    _, log = await make_run(organization)
    await sync_to_async(execute_run)(log.pk)
    event = (await client.receive())["payload"]["data"]["automationLogs"]
    assert event["status"] == "SUCCEEDED"
    assert await client.ws.receive_nothing(0.5)
    await client.close()


DRY_LOGS = """subscription DryLogs($org: ID!, $dry: Boolean) {
  automationLogs(organization: $org, includeDryRuns: $dry) { id status dryRun }
}"""
DRY_ACTIONS = """subscription DryActions($org: ID!, $dry: Boolean) {
  actionUpdates(organization: $org, includeDryRuns: $dry) { logId action { status } }
}"""


async def drain(client, op_ids, until):
    """Messages of `client`, by operation id, until `until(by_op)` holds."""
    by_op = {op_id: [] for op_id in op_ids}
    while not until(by_op):
        message = await client.receive()
        by_op[message["id"]].append(message["payload"]["data"])
    return by_op


async def test_dry_runs_reach_only_subscriptions_that_ask_for_them(organization, editor):
    """Subscriptions of one connection and of another, with and without includeDryRuns, share
    groups and renders: one subscription's choice must not leak into another's."""
    rule, log = await make_run(organization)
    both, plain = Client(editor.raw_token), Client(editor.raw_token)
    await both.connect()
    await plain.connect()
    org = str(organization.pk)
    await subscribed(both, "logs", DRY_LOGS, {"org": org})
    await subscribed(both, "dry-logs", DRY_LOGS, {"org": org, "dry": True})
    await subscribed(both, "dry-actions", DRY_ACTIONS, {"org": org, "dry": True})
    await subscribed(plain, "logs", DRY_LOGS, {"org": org, "dry": False})
    await subscribed(plain, "actions", DRY_ACTIONS, {"org": org})

    product_id = int(log.object_id)
    dry = await sync_to_async(run_rule)(rule, object_id=product_id, user=editor, dry_run=True)
    assert dry.status == "SUCCEEDED"
    seen = await drain(
        both,
        ["logs", "dry-logs", "dry-actions"],
        lambda by_op: (
            len(by_op["dry-actions"]) == 4
            and any(e["automationLogs"]["status"] == "SUCCEEDED" for e in by_op["dry-logs"])
        ),
    )
    assert seen["logs"] == []
    assert {e["automationLogs"]["id"] for e in seen["dry-logs"]} == {str(dry.pk)}
    assert {e["automationLogs"]["dryRun"] for e in seen["dry-logs"]} == {True}
    assert {e["actionUpdates"]["logId"] for e in seen["dry-actions"]} == {str(dry.pk)}
    assert await both.ws.receive_nothing(0.3)
    assert await plain.ws.receive_nothing(0.3)

    # A real run reaches every one of them.
    await sync_to_async(execute_run)(log.pk)
    finished = lambda by_op: any(  # noqa: E731
        e["automationLogs"]["status"] == "SUCCEEDED" for e in by_op["logs"]
    )
    seen = await drain(both, ["logs", "dry-logs", "dry-actions"], finished)
    assert {e["automationLogs"]["id"] for e in seen["logs"]} == {str(log.pk)}
    seen = await drain(plain, ["logs", "actions"], finished)
    assert {e["automationLogs"]["dryRun"] for e in seen["logs"]} == {False}
    assert {e["actionUpdates"]["logId"] for e in seen["actions"]} == {str(log.pk)}
    await both.close()
    await plain.close()


async def test_removed_member_stops_receiving(organization, editor, monkeypatch):
    monkeypatch.setattr(live_auth, "MEMBERSHIP_RECHECK_SECONDS", 0)
    client = Client(editor.raw_token)
    await client.connect()
    await subscribed(client, "1", LOGS, {"org": str(organization.pk)})
    await sync_to_async(Membership.objects.filter(user=editor).delete)()

    _, log = await make_run(organization)
    message = await client.receive()
    assert message["payload"]["data"] is None
    assert message["payload"]["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert await client.receive() == {"id": "1", "type": "complete"}
    await sync_to_async(execute_run)(log.pk)
    assert await client.ws.receive_nothing(0.5)
    await client.close()


async def test_revoked_token_stops_an_open_stream_as_unauthenticated(
    organization, editor, monkeypatch
):
    monkeypatch.setattr(live_auth, "MEMBERSHIP_RECHECK_SECONDS", 0)
    client = Client(editor.raw_token)
    await client.connect()
    await subscribed(client, "1", LOGS, {"org": str(organization.pk)})
    await sync_to_async(ApiToken.objects.filter(user=editor).update)(revoked_at=timezone.now())
    await make_run(organization)
    message = await client.receive()
    assert message["payload"]["data"] is None
    (error,) = message["payload"]["errors"]
    assert (error["extensions"]["code"], error["message"]) == ("UNAUTHENTICATED", "Revoked token.")
    assert await client.receive() == {"id": "1", "type": "complete"}
    await client.close()


async def test_a_removed_member_stops_getting_that_organizations_notifications(
    organization, other_organization, editor, monkeypatch
):
    monkeypatch.setattr(live_auth, "MEMBERSHIP_RECHECK_SECONDS", 0)
    await sync_to_async(MembershipFactory)(user=editor, organization=other_organization)
    client = Client(editor.raw_token)
    await client.connect()
    await subscribed(client, "n", "subscription { notifications { id } }", {})
    await sync_to_async(Membership.objects.filter(user=editor, organization=organization).delete)()

    def notify(org):
        with transaction.atomic():
            notification = NotificationFactory(organization=org, recipient=editor)
            live.publish_notification(notification)
        return notification

    await sync_to_async(notify)(organization)
    kept = await sync_to_async(notify)(other_organization)
    message = await client.receive()
    assert message["payload"]["data"]["notifications"] == {"id": str(kept.pk)}
    assert await client.ws.receive_nothing(0.3)
    await client.close()


@override_settings(GRAPHQL_MAX_COST=100)
async def test_a_subscription_over_the_cost_limit_is_refused_before_it_listens(
    organization, editor
):
    client = Client(editor.raw_token)
    await client.connect()
    query = "subscription($org: ID!) { automationLogs(organization: $org) { conditionTrace { field } } }"
    await client.subscribe("1", query, {"org": str(organization.pk)})
    message = await client.receive()
    assert message["type"] == "error"
    (error,) = message["payload"]
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert "over the limit of 100" in error["message"]
    await client.close()


async def assert_nothing_left(layer) -> None:
    """No group membership and nothing of the closed connections left running (the pub/sub
    layer's one Redis reader stays)."""
    await asyncio.sleep(0.1)
    gc.collect()
    assert group_table(layer) == {}
    leftover = [
        task
        for task in asyncio.all_tasks()
        if task is not asyncio.current_task() and "channels_redis" not in repr(task)
    ]
    assert leftover == []


def group_table(layer) -> dict:
    """{group: channels} of this process's layer (in-memory, or channels-redis pub/sub).

    The pub/sub layer keeps one table per event loop, keyed by its Redis channel name; a group
    leaves the table when its last channel is discarded, and Redis is then unsubscribed.
    """
    if isinstance(layer, InMemoryChannelLayer):
        return layer.groups
    return layer._get_layer().groups


def group_key(layer, group: str) -> str:
    if isinstance(layer, InMemoryChannelLayer):
        return group
    return layer._get_layer()._get_group_channel_name(group)


async def test_disconnecting_clients_leave_no_group_or_task(organization, editor):
    layer = get_channel_layer()
    await layer.flush()  # the layer is process-wide: forget what earlier tests left in it
    key = group_key(layer, organization_group(organization.pk))
    for _ in range(30):
        client = Client(editor.raw_token)
        await client.connect()
        await client.subscribe("logs", LOGS, {"org": str(organization.pk)})
        await client.subscribe("actions", ACTIONS, {"org": str(organization.pk)})
        for _ in range(200):  # both subscriptions joined (one group, one channel)
            if group_table(layer).get(key):
                break
            await asyncio.sleep(0.01)
        assert len(group_table(layer)[key]) == 1
        await client.close()
    await assert_nothing_left(layer)


async def test_a_burst_from_a_worker_thread_arrives_whole_and_in_order(organization, editor):
    """1,000 events published back to back (as Huey threads do) reach one subscriber: no
    message is dropped by a channel capacity, and the order of publication is kept."""
    _, log = await make_run(organization)
    payload = await sync_to_async(lambda: serialize_log(AutomationLog.objects.get(pk=log.pk)))()
    client = Client(editor.raw_token)
    await client.connect()
    await subscribed(client, "1", LOGS, {"org": str(organization.pk)})

    def burst():
        for seq in range(1000):
            message = {"type": LOG_MESSAGE, "log": {**payload, "seq": seq}}
            live._send([(organization_group(organization.pk), message)])

    await sync_to_async(burst)()
    seqs = [
        (await client.receive())["payload"]["data"]["automationLogs"]["seq"] for _ in range(1000)
    ]
    assert seqs == list(range(1000))
    await client.close()


@pytest.mark.django_db(transaction=False)
def test_a_message_is_the_state_at_publication(
    organization, django_capture_on_commit_callbacks, settings
):
    """The engine mutates action entries in place after publishing; the message must not follow.

    Read synchronously from the in-memory layer (channels-redis channels live in an event loop).
    """
    from asgiref.sync import async_to_sync

    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

    rule = AutomationRuleFactory(organization=organization, actions=[update_description()])
    product = ProductFactory(organization=organization, status="ACTIVE")
    (log,) = [log for log in emit_event(product, "UPDATED", {}) if log.rule_id == rule.pk]
    log.action_logs = [{"order": 0, "action_type": "UPDATE_RECORD", "status": "PENDING"}]
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(organization_group(organization.pk), channel)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        live.publish_log(log)
        live.publish_action(log, log.action_logs[0])
    log.action_logs[0]["status"] = "RUNNING"
    for callback in callbacks:
        callback()

    received = [async_to_sync(layer.receive)(channel) for _ in range(2)]
    assert received[0]["log"]["action_logs"][0]["status"] == "PENDING"
    assert received[1]["action"]["status"] == "PENDING"


async def test_a_subscriber_listening_for_days_still_gets_events():
    """Channels' in-memory layer drops group members a day after they joined, unless told not
    to: a live dashboard open over a weekend must keep receiving."""
    import datetime

    import time_machine

    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add("automation.test.long-lived", channel)
    try:
        later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=3)
        with time_machine.travel(later, tick=False):
            await layer.group_send("automation.test.long-lived", {"type": "ping", "n": 1})
            message = await asyncio.wait_for(layer.receive(channel), timeout=5)
        assert message["n"] == 1
    finally:
        await layer.group_discard("automation.test.long-lived", channel)


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs REDIS_URL")
async def test_a_batch_of_publications_goes_to_redis_in_one_pipeline_in_order(monkeypatch):
    """A batch of runs commits hundreds of state changes: they leave as one pipeline of
    PUBLISH commands per shard (not one awaited group_send each), still in order."""
    from channels_redis.pubsub import RedisPubSubChannelLayer

    layer = RedisPubSubChannelLayer(hosts=[os.environ["REDIS_URL"]])
    channel = await layer.new_channel()
    groups = [f"automation.test.{uuid.uuid4().hex}", f"automation.test.{uuid.uuid4().hex}"]
    for group in groups:
        await layer.group_add(group, channel)

    async def no_group_send(group, message):
        raise AssertionError("sent one by one")

    monkeypatch.setattr(layer, "group_send", no_group_send, raising=False)
    sends = [(groups[n % 2], {"type": "automation.log", "n": n}) for n in range(200)]
    try:
        await live._send_all(layer, sends)
        received = [(await asyncio.wait_for(layer.receive(channel), 5))["n"] for _ in sends]
    finally:
        for group in groups:
            await layer.group_discard(group, channel)
        await layer.flush()
    assert received == list(range(200))
