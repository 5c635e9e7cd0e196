"""Fan-out of live events to many subscriptions of one process (graphql_api/fanout.py,
graphql_api/shared_render.py): a group joined once, a message built once, an event rendered once
per distinct subscription; every connection still gets its own shape and its own access check.
"""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from accounts.choices import Role
from accounts.models import Membership
from automation.core.models import AutomationLog
from automation.live.events import organization_group
from automation.runs.execute import execute_run
from graphql_api import live_auth, subscriptions
from graphql_api.shared_render import SharedRenderExecutor
from tests.integration.test_live_subscriptions import (
    LOGS,
    Client,
    assert_nothing_left,
    group_key,
    group_table,
    make_run,
    subscribed,
)

pytestmark = pytest.mark.django_db(transaction=True)

# The claim and the recorded plan commit together: one RUNNING event, with the later seq.
EXPECTED = [("PENDING", 0), ("RUNNING", 2), ("SUCCEEDED", 7)]
SHORT = "subscription($org: ID!) { automationLogs(organization: $org) { id status } }"
VIEWER_ROLE = """subscription($org: ID!) {
  automationLogs(organization: $org) { seq organization { viewerRole } }
}"""


@pytest.fixture
def counted(monkeypatch):
    """{"built": messages made model instances, "rendered": renders of a run event, executed
    or direct (graphql_api/fast_render.py)}."""
    counts = {"built": 0, "rendered": 0}
    build, render = subscriptions.log_from_message, SharedRenderExecutor._render

    def counting_build(payload, *args):
        counts["built"] += 1
        return build(payload, *args)

    def counting_render(self, serially=None):
        if isinstance(self.root_value, AutomationLog):
            counts["rendered"] += 1
        return render(self, serially)

    monkeypatch.setattr(subscriptions, "log_from_message", counting_build)
    monkeypatch.setattr(SharedRenderExecutor, "_render", counting_render)
    return counts


async def connected(user, count=1):
    clients = [Client(user.raw_token) for _ in range(count)]
    for client in clients:
        await client.connect()
    return clients


async def logs_of(client, count):
    return [(await client.receive())["payload"]["data"]["automationLogs"] for _ in range(count)]


async def close_all(clients):
    for client in clients:
        await client.close()


async def test_equal_subscriptions_each_get_every_event_in_order_from_one_render(
    organization, editor, counted
):
    clients = await connected(editor, 3)
    for client in clients:
        await subscribed(client, "1", LOGS, {"org": str(organization.pk)})

    rule, log = await make_run(organization)
    await sync_to_async(execute_run)(log.pk)

    received = [await logs_of(client, 3) for client in clients]
    assert [(e["status"], e["seq"]) for e in received[0]] == EXPECTED
    assert received[1] == received[0] and received[2] == received[0]
    assert received[0][0]["rule"] == {"id": str(rule.pk), "name": rule.name}
    # One model instance per message and one render per event, not one per connection.
    assert counted == {"built": 3, "rendered": 3}
    for client in clients:
        assert await client.ws.receive_nothing(0.3)
    await close_all(clients)


async def test_each_selection_and_filter_gets_its_own_shape(organization, editor, counted):
    full, short, finished = await connected(editor, 3)
    await subscribed(full, "1", LOGS, {"org": str(organization.pk)})
    await subscribed(short, "1", SHORT, {"org": str(organization.pk)})
    await subscribed(finished, "1", LOGS, {"org": str(organization.pk), "statuses": ["SUCCEEDED"]})

    _, log = await make_run(organization)
    await sync_to_async(execute_run)(log.pk)

    full_events = await logs_of(full, 3)
    short_events = await logs_of(short, 3)
    (finished_event,) = await logs_of(finished, 1)
    assert [(e["status"], e["seq"]) for e in full_events] == EXPECTED
    assert short_events == [{"id": str(log.pk), "status": e["status"]} for e in full_events]
    assert finished_event == full_events[2]
    # Distinct documents or variables never share a render: 3 + 3 events, and the SUCCEEDED one
    # once more for the filtered subscription.
    assert counted == {"built": 3, "rendered": 3 + 3 + 1}
    assert await finished.ws.receive_nothing(0.3)
    await close_all([full, short, finished])


async def test_a_field_shown_per_user_is_rendered_per_user(
    organization, editor, make_member, counted
):
    viewer = await sync_to_async(make_member)(organization, Role.VIEWER)
    clients = await connected(editor, 2) + await connected(viewer)
    for client in clients:
        await subscribed(client, "1", VIEWER_ROLE, {"org": str(organization.pk)})

    await make_run(organization)  # the PENDING event

    roles = [(await logs_of(client, 1))[0]["organization"]["viewerRole"] for client in clients]
    assert roles == ["EDITOR", "EDITOR", "VIEWER"]
    assert counted["rendered"] == 2  # one per user: the editor's two connections share one
    await close_all(clients)


async def test_a_removed_member_stops_while_others_with_the_same_subscription_go_on(
    organization, editor, make_member, monkeypatch
):
    monkeypatch.setattr(live_auth, "MEMBERSHIP_RECHECK_SECONDS", 0)
    colleague = await sync_to_async(make_member)(organization)
    (staying,) = await connected(editor)
    (removed,) = await connected(colleague)
    for client in (staying, removed):
        await subscribed(client, "1", LOGS, {"org": str(organization.pk)})
    await sync_to_async(Membership.objects.filter(user=colleague).delete)()

    _, log = await make_run(organization)
    await sync_to_async(execute_run)(log.pk)

    message = await removed.receive()
    assert message["payload"]["data"] is None
    assert message["payload"]["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert await removed.receive() == {"id": "1", "type": "complete"}
    assert await removed.ws.receive_nothing(0.3)
    assert [(e["status"], e["seq"]) for e in await logs_of(staying, 3)] == EXPECTED
    await close_all([staying, removed])


async def test_many_connections_share_one_group_channel_and_leave_nothing_behind(
    organization, editor
):
    layer = get_channel_layer()
    await layer.flush()  # the layer is process-wide: forget what earlier tests left in it
    key = group_key(layer, organization_group(organization.pk))
    clients = await connected(editor, 5)
    for client in clients:
        await subscribed(client, "1", LOGS, {"org": str(organization.pk)})
    assert len(group_table(layer)[key]) == 1

    await close_all(clients[:4])
    await asyncio.sleep(0.1)
    assert len(group_table(layer)[key]) == 1  # the last connection still listens
    _, log = await make_run(organization)
    assert (await logs_of(clients[4], 1))[0]["status"] == "PENDING"

    await clients[4].close()
    await assert_nothing_left(layer)
