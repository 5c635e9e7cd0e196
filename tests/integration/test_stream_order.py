"""A process passes an organization's events on in cursor order, each once
(graphql_api/stream.py): a message arriving late is replaced by the journal's copy as soon as a
later one shows it is missing, and a subscription with `after` replays the journal before it
goes live, without a duplicate at the hand-off. Through the real ASGI application.

The engine's sends are held back here (`held`) and delivered by hand, in the order each test
chooses: as two processes' messages, or a lost one, would arrive.
"""

import pytest
from asgiref.sync import sync_to_async
from django.db import transaction

from automation.live import events as live
from automation.live import journal
from tests.factories import AutomationLogFactory, AutomationRuleFactory
from tests.integration.test_live_subscriptions import Client, subscribed

pytestmark = pytest.mark.django_db(transaction=True)

LOGS = """subscription($org: ID!, $after: String) {
  automationLogs(organization: $org, after: $after) { id seq cursor }
}"""
ACTIONS = """subscription($org: ID!, $after: String) {
  actionUpdates(organization: $org, after: $after) { logId cursor action { status } }
}"""


@pytest.fixture
def held(monkeypatch):
    """The engine's sends, kept instead of sent; `deliver(i, ...)` sends those given, in order."""
    sends = []
    real = live._send
    monkeypatch.setattr(live, "_send", sends.extend)

    async def deliver(*indexes):
        for index in indexes:
            await sync_to_async(real)([sends[index]])

    deliver.sends = sends
    return deliver


@sync_to_async
def publish(organization, count, action_every=0):
    """`count` events of one run, each committed alone (positions 1.. for a new organization)."""
    log = AutomationLogFactory(rule=AutomationRuleFactory(organization=organization))
    for number in range(1, count + 1):
        with transaction.atomic():
            if action_every and number % action_every == 0:
                live.publish_action(
                    log, {"order": 0, "action_type": "UPDATE_RECORD", "status": "RUNNING"}
                )
            else:
                live.publish_log(log)
    return log


async def positions(client, op_id, count, field="automationLogs"):
    found = []
    for _ in range(count):
        message = await client.receive()
        assert message["id"] == op_id and message["type"] == "next", message
        found.append(journal.decode(message["payload"]["data"][field]["cursor"])[1])
    return found


async def nothing_more(client):
    assert await client.ws.receive_nothing(timeout=0.3)


async def test_a_late_message_is_replaced_by_the_journal_and_then_dropped(
    organization, editor, held
):
    client = Client(editor.raw_token)
    await client.connect()
    await subscribed(client, "1", LOGS, {"org": str(organization.pk)})
    await publish(organization, 4)
    await held(0, 2)  # 2 is late: 3 arrives first
    assert await positions(client, "1", 3) == [1, 2, 3]
    await held(1)  # the late one, already passed on from the journal
    await held(3)
    assert await positions(client, "1", 1) == [4]
    await nothing_more(client)
    await client.close()


async def test_after_replays_the_journal_then_goes_live_without_duplicates(
    organization, editor, held
):
    await publish(organization, 3)  # journaled, never sent
    client = Client(editor.raw_token)
    await client.connect()
    after = journal.encode(organization.pk, 1)
    await subscribed(client, "1", LOGS, {"org": str(organization.pk), "after": after})
    assert await positions(client, "1", 2) == [2, 3]
    await publish(organization, 1)  # a second run: position 4
    await held(2, 3)  # 3 again (already replayed), then 4
    assert await positions(client, "1", 1) == [4]
    await nothing_more(client)
    await client.close()


async def test_each_subscription_gets_its_own_kind_in_the_one_order(organization, editor, held):
    """Action and run events share the organization's positions; each subscription gets its
    kind, in order, and a lost message of the other kind does not stop it."""
    client = Client(editor.raw_token)
    await client.connect()
    start = journal.encode(organization.pk, 0)
    await subscribed(client, "logs", LOGS, {"org": str(organization.pk), "after": start})
    await subscribed(client, "actions", ACTIONS, {"org": str(organization.pk), "after": start})
    await publish(organization, 6, action_every=2)  # L A L A L A
    await held(0, 3, 5)  # 1, 4, 6: positions 2, 3 and 5 lost
    received = {"logs": [], "actions": []}
    for _ in range(6):
        message = await client.receive()
        field = "automationLogs" if message["id"] == "logs" else "actionUpdates"
        received[message["id"]].append(
            journal.decode(message["payload"]["data"][field]["cursor"])[1]
        )
    assert received == {"logs": [1, 3, 5], "actions": [2, 4, 6]}
    await nothing_more(client)
    await client.close()
