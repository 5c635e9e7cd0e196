"""Drill: hostile frames and floods over the GraphQL WebSocket (the real ASGI application).

Each must close the connection promptly with 4400 and the reason (graphql-ws: a connection_error
first), or refuse the one operation with a coded error, and leave the server serving: a new
connection subscribes and is acknowledged afterwards. Before these guards, a frame that nested
too deeply (RecursionError in json.loads) or that was not a JSON object (TypeError) killed the
connection's handler and left the socket open and silent.
"""

import json

import pytest
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from config.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 5
PROTOCOLS = ["graphql-transport-ws", "graphql-ws"]
DEEP = "[" * 100_000 + "]" * 100_000


async def connect(protocol: str) -> WebsocketCommunicator:
    ws = WebsocketCommunicator(application, "/graphql/", subprotocols=[protocol])
    connected, _ = await ws.connect(TIMEOUT)
    assert connected
    return ws


async def authenticated(protocol: str, token: str) -> WebsocketCommunicator:
    ws = await connect(protocol)
    init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
    await ws.send_json_to(init)
    assert (await ws.receive_json_from(TIMEOUT))["type"] == "connection_ack"
    return ws


async def closed_with_4400(ws, protocol: str) -> str:
    """The close reason, after checking the close (and graphql-ws's connection_error)."""
    output = await ws.receive_output(TIMEOUT)
    if protocol == "graphql-ws":
        error = json.loads(output["text"])
        assert error["type"] == "connection_error", error
        reason = error["payload"]["message"]
        output = await ws.receive_output(TIMEOUT)
        assert output.get("reason") == reason
    assert (output["type"], output["code"]) == ("websocket.close", 4400), output
    return output["reason"]


async def still_serving(protocol: str, token: str) -> None:
    ws = await authenticated(protocol, token)
    await ws.disconnect()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("where", ["frame", "connection_init payload", "after auth"])
async def test_a_hundred_thousand_deep_frame_closes_with_4400(protocol, where, editor):
    ws = await (
        authenticated(protocol, editor.raw_token) if where == "after auth" else connect(protocol)
    )
    frame = (
        DEEP
        if where != "connection_init payload"
        else ('{"type": "connection_init", "payload": ' + DEEP + "}")
    )
    await ws.send_to(text_data=frame)
    assert await closed_with_4400(ws, protocol) == "WebSocket message nests too deeply"
    await still_serving(protocol, editor.raw_token)


MALFORMED = [
    ("123", "must be a JSON object"),
    ("[]", "must be a JSON object"),
    ('"connection_init"', "must be a JSON object"),
    ("null", "must be a JSON object"),
    ('{"payload": {}}', "type must be a string"),
    ('{"type": ["connection_init"]}', "type must be a string"),
]
OPERATION_KIND = {"graphql-transport-ws": "subscribe", "graphql-ws": "start"}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(("frame", "reason"), MALFORMED, ids=[m[0] for m in MALFORMED])
async def test_a_frame_that_is_not_a_message_closes_with_4400(protocol, frame, reason, editor):
    ws = await connect(protocol)
    await ws.send_to(text_data=frame)
    assert reason in await closed_with_4400(ws, protocol)
    await still_serving(protocol, editor.raw_token)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({"id": "1", "payload": "{ me { id } }"}, "payload must be an object"),
        ({"id": "1", "payload": {"query": 42}}, "with a query string"),
        ({"id": "1", "payload": {"query": "{ me { id } }", "variables": [1]}}, "variables"),
        ({"id": ["1"], "payload": {"query": "{ me { id } }"}}, "id must be a string"),
    ],
    ids=["payload", "query", "variables", "id"],
)
async def test_an_operation_with_fields_of_the_wrong_type_closes_with_4400(
    protocol, message, reason, editor
):
    ws = await authenticated(protocol, editor.raw_token)
    await ws.send_json_to({"type": OPERATION_KIND[protocol], **message})
    assert reason in await closed_with_4400(ws, protocol)
    await still_serving(protocol, editor.raw_token)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@override_settings(GRAPHQL_MAX_SUBSCRIPTIONS_PER_CONNECTION=3)
async def test_subscriptions_per_connection_are_capped_with_a_clear_error(
    protocol, organization, editor
):
    ws = await authenticated(protocol, editor.raw_token)
    kind = OPERATION_KIND[protocol]
    query = "subscription($org: ID!) { automationLogs(organization: $org) { id } }"
    payload = {"query": query, "variables": {"org": str(organization.pk)}}
    for op_id in ("1", "2", "3", "4"):
        await ws.send_json_to({"id": op_id, "type": kind, "payload": payload})
    refusal = await ws.receive_json_from(TIMEOUT)
    assert (refusal["id"], refusal["type"]) == ("4", "error")
    error = refusal["payload"][0] if protocol == "graphql-transport-ws" else refusal["payload"]
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert "already runs 3 operations" in error["message"]
    assert await ws.receive_nothing(0.3)  # the three others go on

    stop = {"id": "1", "type": "complete" if kind == "subscribe" else "stop"}
    await ws.send_json_to(stop)
    if protocol == "graphql-ws":
        assert await ws.receive_json_from(TIMEOUT) == {"type": "complete", "id": "1"}
    await ws.send_json_to({"id": "5", "type": kind, "payload": payload})
    assert await ws.receive_nothing(0.3)  # accepted: no error
    await ws.disconnect()
