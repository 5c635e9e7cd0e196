"""Drill: one client opening WebSocket connection after connection (the real ASGI application).

One viewer opened 300 connections of 50 subscriptions each (memory 122 -> 470 MB): the cap per
connection bounds nothing when connections are free. Now a user holds at most
GRAPHQL_MAX_WEBSOCKETS_PER_USER connections, and an address at most
GRAPHQL_MAX_UNAUTHENTICATED_WEBSOCKETS_PER_ADDRESS that have not authenticated yet; one more is
closed with 4429 and the reason. The counts are leases in memory (embedded) or in Redis
(distributed, shared by every server process); a crashed process's leases run out.
"""

import json

import pytest
import time_machine
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from config.asgi import application
from graphql_api import websocket_slots

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 5
PROTOCOLS = ["graphql-transport-ws", "graphql-ws"]
USER_REASON = "Too many connections: you already have 3 open (GRAPHQL_MAX_WEBSOCKETS_PER_USER)."


async def opened(protocol: str, address: str = "10.9.0.1") -> WebsocketCommunicator:
    ws = WebsocketCommunicator(application, "/graphql/", subprotocols=[protocol])
    ws.scope["client"] = (address, 50000)
    assert (await ws.connect(TIMEOUT))[0]
    return ws


async def init(ws, token: str) -> dict:
    init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
    await ws.send_json_to(init)
    return await ws.receive_output(TIMEOUT)


async def authenticated(protocol: str, token: str, address: str = "10.9.0.1"):
    ws = await opened(protocol, address)
    answer = await init(ws, token)
    assert json.loads(answer["text"])["type"] == "connection_ack", answer
    return ws


async def refused_at_init(ws, protocol: str, token: str) -> tuple[int, str]:
    """The close code and reason of a connection_init refused for too many connections."""
    output = await init(ws, token)
    if protocol == "graphql-ws":
        error = json.loads(output["text"])
        assert error == {
            "type": "connection_error",
            "payload": {"message": USER_REASON, "code": "RATE_LIMITED"},
        }
        output = await ws.receive_output(TIMEOUT)
    assert output["type"] == "websocket.close", output
    return output["code"], output["reason"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@override_settings(GRAPHQL_MAX_WEBSOCKETS_PER_USER=3)
async def test_a_user_over_the_connection_cap_is_refused_with_4429(protocol, editor):
    token = editor.raw_token
    held = [await authenticated(protocol, token, f"10.9.0.{n}") for n in range(3)]
    extra = await opened(protocol, "10.9.0.99")
    assert await refused_at_init(extra, protocol, token) == (4429, USER_REASON)
    await extra.disconnect()

    await held.pop().disconnect()  # one given back: room for one more
    held.append(await authenticated(protocol, token))
    again = await opened(protocol)
    assert await refused_at_init(again, protocol, token) == (4429, USER_REASON)
    for ws in [again, *held]:
        await ws.disconnect()


@override_settings(GRAPHQL_MAX_WEBSOCKETS_PER_USER=2)
async def test_the_cap_counts_both_protocols_and_other_users_are_not_counted(
    organization, editor, make_member
):
    from asgiref.sync import sync_to_async

    from accounts.choices import Role

    other = await sync_to_async(make_member)(organization, Role.VIEWER)
    held = [
        await authenticated("graphql-transport-ws", editor.raw_token),
        await authenticated("graphql-ws", editor.raw_token),
        await authenticated("graphql-transport-ws", other.raw_token),
    ]
    extra = await opened("graphql-transport-ws")
    code, _reason = await refused_at_init(extra, "graphql-transport-ws", editor.raw_token)
    assert code == 4429
    for ws in [extra, *held]:
        await ws.disconnect()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@override_settings(GRAPHQL_MAX_UNAUTHENTICATED_WEBSOCKETS_PER_ADDRESS=2)
async def test_connections_waiting_for_init_are_capped_per_address(protocol, editor):
    waiting = [await opened(protocol, "10.7.0.1") for _ in range(2)]
    extra = await opened(protocol, "10.7.0.1")
    closed = await extra.receive_output(TIMEOUT)
    assert (closed["type"], closed["code"]) == ("websocket.close", 4429)
    assert closed["reason"] == (
        "Too many unauthenticated connections from your address "
        "(GRAPHQL_MAX_UNAUTHENTICATED_WEBSOCKETS_PER_ADDRESS)."
    )
    elsewhere = await opened(protocol, "10.7.0.2")  # another address is not counted

    # A connection that authenticates gives its address slot back.
    answer = await init(waiting[0], editor.raw_token)
    assert json.loads(answer["text"])["type"] == "connection_ack"
    late = await opened(protocol, "10.7.0.1")
    assert await late.receive_nothing(0.1)  # not closed
    for ws in [late, elsewhere, *waiting]:
        await ws.disconnect()


@override_settings(GRAPHQL_MAX_WEBSOCKETS_PER_USER=2)
async def test_slots_of_a_crashed_process_run_out(editor):
    """Two leases taken by a process that died (never given back, never renewed) hold the
    user's slots until LEASE_SECONDS have passed; then a connection is let in."""
    with time_machine.travel(1_000_000, tick=False) as clock:
        key = f"user:{editor.pk}"
        store = websocket_slots.store()
        for holder in ("crashed-1", "crashed-2"):
            assert await store.take(key, holder, 2, 1_000_000.0)
        ws = await opened("graphql-transport-ws")
        assert await refused_at_init(ws, "graphql-transport-ws", editor.raw_token) == (
            4429,
            USER_REASON.replace("3", "2"),
        )
        await ws.disconnect()

        clock.shift(websocket_slots.LEASE_SECONDS - 1)
        ws = await opened("graphql-transport-ws")
        code, _reason = await refused_at_init(ws, "graphql-transport-ws", editor.raw_token)
        assert code == 4429
        await ws.disconnect()

        clock.shift(1)
        ws = await authenticated("graphql-transport-ws", editor.raw_token)
        await ws.disconnect()


async def test_a_living_connection_keeps_its_slot_past_the_first_lease(db):
    """Renewed leases hold: a connection that lives longer than LEASE_SECONDS is still
    counted, while one of a process that stopped renewing runs out."""
    lease = websocket_slots.LEASE_SECONDS
    with time_machine.travel(2_000_000, tick=False) as clock:
        living, crashed = websocket_slots.ConnectionSlots(), websocket_slots.ConnectionSlots()
        assert await living.take("user:renewed", 2)
        assert await crashed.take("user:renewed", 2)
        for _ in range(3):
            clock.shift(lease - 1)
            await living.renew()
        newcomer = websocket_slots.ConnectionSlots()
        assert await newcomer.take("user:renewed", 2)  # the crashed one's lease ran out
        assert not await websocket_slots.ConnectionSlots().take("user:renewed", 2)
        for slots in (living, crashed, newcomer):
            await slots.give_back_all()
