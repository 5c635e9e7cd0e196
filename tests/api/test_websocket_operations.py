"""Queries and mutations sent over the GraphQL WebSocket run as over HTTP (the real ASGI app).

Both protocols allow them (graphql-transport-ws `subscribe`, graphql-ws `start` with a query or
a mutation). They used to fail with INTERNAL_SERVER_ERROR (SynchronousOnlyOperation: Strawberry
ran the resolvers on the event loop), logging a traceback each, on graphql-transport-ws; and
graphql-ws refused them ("queries are not allowed"). Now each gets one result shaped like the
HTTP answer (data, errors with their codes) and `complete`, with the same permission checks,
cost limit and acting user as over HTTP, and nothing is logged.
"""

import logging

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import override_settings
from django.utils import timezone

from accounts.choices import Role
from accounts.models import ApiToken
from catalog.models import Product
from config.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 5
PROTOCOLS = ["graphql-transport-ws", "graphql-ws"]
KIND = {"graphql-transport-ws": "subscribe", "graphql-ws": "start"}
RESULT = {"graphql-transport-ws": "next", "graphql-ws": "data"}
CREATE = """mutation($input: ProductInput!) { createProduct(input: $input) { id name } }"""
PRODUCT = "query Read($id: ID!) { product(id: $id) { name organization { id } } }"


async def connected(protocol: str, user) -> WebsocketCommunicator:
    ws = WebsocketCommunicator(application, "/graphql/", subprotocols=[protocol])
    assert (await ws.connect(TIMEOUT))[0]
    init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {user.raw_token}"}}
    await ws.send_json_to(init)
    assert (await ws.receive_json_from(TIMEOUT))["type"] == "connection_ack"
    return ws


async def run(ws, protocol: str, op_id: str, query: str, variables=None) -> dict:
    """Send one operation; its one result payload ({data, errors}), after checking that
    `complete` follows it."""
    payload = {"query": query, "variables": variables or {}}
    await ws.send_json_to({"id": op_id, "type": KIND[protocol], "payload": payload})
    result = await ws.receive_json_from(TIMEOUT)
    assert (result["id"], result["type"]) == (op_id, RESULT[protocol]), result
    assert await ws.receive_json_from(TIMEOUT) == {"id": op_id, "type": "complete"}
    return result["payload"]


def codes(payload: dict) -> list[str]:
    return [error["extensions"]["code"] for error in payload.get("errors") or []]


@pytest.fixture
def server_errors(caplog):
    """The ERROR records logged while the test runs (a masked error logs its traceback)."""
    caplog.set_level(logging.ERROR)
    return lambda: [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_mutation_and_a_query_run_as_the_connection_user(
    protocol, organization, editor, server_errors
):
    ws = await connected(protocol, editor)
    created = await run(
        ws,
        protocol,
        "1",
        CREATE,
        {"input": {"organization": str(organization.pk), "name": "Lamp"}},
    )
    assert "errors" not in created, created
    product_id = created["data"]["createProduct"]["id"]
    read = await run(ws, protocol, "2", PRODUCT, {"id": product_id})
    assert read == {
        "data": {"product": {"name": "Lamp", "organization": {"id": str(organization.pk)}}}
    }
    product = await Product.objects.select_related("created_by").aget(pk=product_id)
    assert product.created_by == editor  # acting as the connection's user, as over HTTP
    await ws.disconnect()
    assert server_errors() == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_permissions_are_checked_as_over_http(
    protocol, organization, other_organization, make_member, server_errors
):
    viewer = await sync_to_async(make_member)(organization, Role.VIEWER)
    outsider_product = await Product.objects.acreate(organization=other_organization, name="X")
    ws = await connected(protocol, viewer)
    refused = await run(
        ws, protocol, "1", CREATE, {"input": {"organization": str(organization.pk), "name": "L"}}
    )
    assert codes(refused) == ["PERMISSION_DENIED"]
    hidden = await run(ws, protocol, "2", PRODUCT, {"id": str(outsider_product.pk)})
    assert codes(hidden) == ["NOT_FOUND"]
    assert not await Product.objects.filter(organization=organization).aexists()
    await ws.disconnect()
    assert server_errors() == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
@override_settings(GRAPHQL_MAX_COST=5)
async def test_the_cost_limit_refuses_a_query_before_execution(
    protocol, organization, editor, server_errors
):
    ws = await connected(protocol, editor)
    costly = await run(ws, protocol, "1", "{ rules(limit: 50) { id name } }")
    assert costly["data"] is None
    assert codes(costly) == ["GRAPHQL_VALIDATION_FAILED"]
    assert "over the limit of 5" in costly["errors"][0]["message"]
    await ws.disconnect()
    assert server_errors() == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_token_revoked_after_connecting_is_refused(
    protocol, organization, editor, server_errors
):
    ws = await connected(protocol, editor)
    assert "errors" not in await run(ws, protocol, "1", "{ me { id } }")
    await ApiToken.objects.filter(user=editor).aupdate(revoked_at=timezone.now())
    revoked = await run(ws, protocol, "2", "{ me { id } }")
    assert revoked["data"] is None
    assert [(e["message"], e["extensions"]["code"]) for e in revoked["errors"]] == [
        ("Revoked token.", "UNAUTHENTICATED")
    ]
    await ws.disconnect()
    assert server_errors() == []


@pytest.mark.django_db
def test_a_subscription_over_http_is_refused(gql, organization, editor):
    """The other direction, through the same operation_type() check: HTTP cannot stream."""
    query = "subscription($org: ID!) { automationLogs(organization: $org) { id } }"
    answer = gql(query, {"org": str(organization.pk)}, token=editor)
    assert answer.codes == ["GRAPHQL_VALIDATION_FAILED"]
    assert "served over WebSocket" in answer.error()["message"]
