"""The per-user WebSocket connection cap against real `serve` processes and real clients.

- embedded: one server, its leases in memory;
- distributed: two `serve --no-worker` processes on the same PostgreSQL and Redis; the user's
  connections on server A count against a connection opened on server B.

GRAPHQL_MAX_WEBSOCKETS_PER_USER is 2 here. The third connection is closed with 4429 and the
reason; `gql` raises TransportConnectionFailed from websockets' ConnectionClosedError, which
carries both (what a client shows its user).
"""

import asyncio
import contextlib
import json
import os
import time

import pytest
import websockets
from gql.transport.exceptions import TransportConnectionFailed
from websockets.exceptions import ConnectionClosed

from tests.e2e.conftest import isolated_environment, launch
from tests.e2e.test_subscriptions import gql_client, ws_url

REASON = "Too many connections: you already have 2 open (GRAPHQL_MAX_WEBSOCKETS_PER_USER)."
RETRY_SECONDS = 10


@pytest.fixture
def two_per_user(monkeypatch):
    monkeypatch.setenv("GRAPHQL_MAX_WEBSOCKETS_PER_USER", "2")


async def open_connection(server, token):
    """An acknowledged graphql-transport-ws connection (the caller closes it)."""
    ws = await websockets.connect(ws_url(server), subprotocols=["graphql-transport-ws"])
    payload = {"Authorization": f"Bearer {token}"}
    await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
    answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert answer["type"] == "connection_ack", answer
    return ws


async def refusal(server, token) -> tuple[int, str]:
    """The close code and reason a third connection gets."""
    async with websockets.connect(ws_url(server), subprotocols=["graphql-transport-ws"]) as ws:
        payload = {"Authorization": f"Bearer {token}"}
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def check_the_cap(server_a, server_b, token) -> None:
    held = [await open_connection(server_a, token), await open_connection(server_a, token)]
    assert await refusal(server_b, token) == (4429, REASON)

    with pytest.raises(TransportConnectionFailed) as failed:
        async with gql_client(server_b, token):
            pass
    cause = failed.value.__cause__
    assert (cause.rcvd.code, cause.rcvd.reason) == (4429, REASON)

    # One closed on A: B lets one in, once A has given the slot back (right after the close).
    await held.pop().close()
    deadline = time.monotonic() + RETRY_SECONDS
    while True:
        try:
            held.append(await open_connection(server_b, token))
            break
        except (AssertionError, ConnectionClosed):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
    for ws in held:
        await ws.close()


@pytest.mark.embedded_only
async def test_embedded_server_caps_connections_per_user(start_server, two_per_user):
    server = start_server(embedded=True)
    member = server.create_member("many-sockets", "sockets")
    await check_the_cap(server, server, member.token)


@pytest.mark.skipif(
    not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")),
    reason="needs DATABASE_URL (PostgreSQL) and REDIS_URL",
)
async def test_distributed_servers_share_the_cap_per_user(tmp_path, two_per_user):
    data_dir = tmp_path / "distributed"
    with contextlib.ExitStack() as stack:
        env = stack.enter_context(isolated_environment(data_dir, embedded=False))
        server_a = launch(env, data_dir, ["--no-worker"])
        stack.callback(server_a.stop)
        server_b = launch(env, data_dir, ["--no-worker", "--skip-migrate"])
        stack.callback(server_b.stop)
        member = server_a.create_member("many-sockets", "sockets")
        await check_the_cap(server_a, server_b, member.token)
