"""Membership and credential checks of WebSocket connections: fresh for each connection, shared
between the connections of one user and credential; a session is re-checked as a token is."""

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.test import Client as DjangoClient

from accounts.models import Membership
from graphql_api import live_auth
from graphql_api.live_auth import ConnectionAccess
from tests.integration.test_live_subscriptions import LOGS, Client, make_run, subscribed

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def reads(monkeypatch):
    """Counts the membership reads (each is a query on Channels' one sync thread)."""
    live_auth._recent_reads.clear()
    counted = []
    real = ConnectionAccess._read_roles

    def counting(self):
        counted.append(self.user.pk)
        return real(self)

    monkeypatch.setattr(ConnectionAccess, "_read_roles", counting)
    yield counted
    live_auth._recent_reads.clear()


async def test_connections_opening_together_share_their_first_read(organization, editor, reads):
    """500 clients reconnecting at once must not queue 500 reads."""
    accesses = [ConnectionAccess(editor) for _ in range(50)]
    roles = await asyncio.gather(*(access.role_in(organization.pk) for access in accesses))
    assert set(roles) == {"EDITOR"}
    assert len(reads) == 1


async def test_a_connection_never_trusts_a_read_from_before_it_opened(organization, editor, reads):
    early = ConnectionAccess(editor)
    assert await early.role_in(organization.pk) == "EDITOR"
    await sync_to_async(Membership.objects.filter(user=editor).delete)()

    late = ConnectionAccess(editor)  # opened after the removal
    assert await late.role_in(organization.pk) is None
    assert len(reads) == 2


# --- Session-cookie connections: re-checked like tokens ------------------------------------------


async def session_client(user):
    """A logged-in browser (Django's test client) and a WebSocket client on its session."""
    browser = DjangoClient()
    await sync_to_async(browser.force_login)(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={browser.cookies[settings.SESSION_COOKIE_NAME].value}"
    client = Client(headers=[(b"cookie", cookie.encode())])
    assert json.loads((await client.connect())["text"]) == {"type": "connection_ack"}
    return browser, client


async def ended_as_unauthenticated(client, op_id="1"):
    message = await client.receive()
    assert message["payload"]["data"] is None
    (error,) = message["payload"]["errors"]
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    assert "session has ended" in error["message"]
    assert await client.receive() == {"id": op_id, "type": "complete"}


@pytest.fixture
def recheck_every_event(monkeypatch):
    monkeypatch.setattr(live_auth, "MEMBERSHIP_RECHECK_SECONDS", 0)


async def test_logging_out_ends_a_session_subscription(organization, editor, recheck_every_event):
    browser, client = await session_client(editor)
    _, other_tab = await session_client(editor)  # another browser of the same user
    for each in (client, other_tab):
        await subscribed(each, "1", LOGS, {"org": str(organization.pk)})
    _, log = await make_run(organization)
    assert (await client.receive())["payload"]["data"]["automationLogs"]["id"] == str(log.pk)
    assert (await other_tab.receive())["payload"]["data"]["automationLogs"]["id"] == str(log.pk)

    await sync_to_async(browser.logout)()
    await make_run(organization)
    await ended_as_unauthenticated(client)
    assert (await other_tab.receive())["payload"]["data"]["automationLogs"]["status"] == "PENDING"
    await client.close()
    await other_tab.close()


async def test_a_password_change_ends_a_session_subscription(
    organization, editor, recheck_every_event
):
    _, client = await session_client(editor)
    await subscribed(client, "1", LOGS, {"org": str(organization.pk)})

    def change_password():
        editor.set_password("a-new-pass-w0rd")
        editor.save()

    await sync_to_async(change_password)()
    await make_run(organization)
    await ended_as_unauthenticated(client)
    await client.close()


async def test_a_removed_member_on_a_session_still_gets_not_found(
    organization, editor, recheck_every_event
):
    _, client = await session_client(editor)
    await subscribed(client, "1", LOGS, {"org": str(organization.pk)})
    await sync_to_async(Membership.objects.filter(user=editor).delete)()
    await make_run(organization)
    message = await client.receive()
    assert message["payload"]["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    await client.close()
