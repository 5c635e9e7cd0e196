"""Membership checks of WebSocket connections: fresh for each connection, shared between them."""

import asyncio

import pytest
from asgiref.sync import sync_to_async

from accounts.models import Membership
from graphql_api import live_auth
from graphql_api.live_auth import ConnectionAccess

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
