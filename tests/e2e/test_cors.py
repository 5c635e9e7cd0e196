"""CORS for /graphql/ and the WebSocket origin check against real servers, with the requests a
browser on another origin sends: the preflight (OPTIONS), the POST, the WebSocket handshake.

CORS_ALLOWED_ORIGINS lets a page both query and subscribe: WEBSOCKET_ALLOWED_ORIGINS, when it is
not set, follows it; set (even to nothing), it alone decides."""

import asyncio

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.e2e.test_subscriptions import ws_url

# Origins checked by the HTTP and WebSocket doors, the same in both modes; a page in Chromium.
pytestmark = pytest.mark.embedded_only

APP = "https://app.example.com"


def preflight(server, origin):
    return httpx.options(
        f"{server.base_url}/graphql/",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
        timeout=30,
    )


def handshake(server, origin) -> int:
    """The HTTP status of a WebSocket handshake from a page on `origin` (101: accepted)."""

    async def attempt():
        try:
            async with websockets.connect(
                ws_url(server), origin=origin, subprotocols=["graphql-transport-ws"]
            ):
                return 101
        except InvalidStatus as refused:
            return refused.response.status_code

    return asyncio.run(attempt())


def test_a_page_on_a_listed_origin_queries_and_subscribes(start_server):
    server = start_server(env={"CORS_ALLOWED_ORIGINS": APP})
    member = server.create_member("cors-user", "cors-org", role="VIEWER")

    answer = preflight(server, APP)
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == APP
    assert "authorization" in answer.headers["access-control-allow-headers"]
    assert "access-control-allow-credentials" not in answer.headers

    answer = httpx.post(
        f"{server.base_url}/graphql/",
        json={"query": "{ me { username } }"},
        headers={"Origin": APP, "Authorization": f"Bearer {member.token}"},
        timeout=30,
    )
    assert answer.json() == {"data": {"me": {"username": "cors-user"}}}
    assert answer.headers["access-control-allow-origin"] == APP

    assert handshake(server, APP) == 101, "the CORS origins may subscribe too"

    other = "https://evil.example"
    assert "access-control-allow-origin" not in preflight(server, other).headers
    assert handshake(server, other) == 403


def test_websocket_allowed_origins_set_to_nothing_keeps_subscriptions_same_origin(start_server):
    server = start_server(env={"CORS_ALLOWED_ORIGINS": APP, "WEBSOCKET_ALLOWED_ORIGINS": ""})
    assert preflight(server, APP).headers["access-control-allow-origin"] == APP
    assert handshake(server, APP) == 403


def test_without_cors_allowed_origins_no_other_origin_is_answered(e2e_server):
    answer = preflight(e2e_server, APP)
    assert "access-control-allow-origin" not in answer.headers
    assert handshake(e2e_server, APP) == 403


@pytest.mark.embedded_only
@pytest.mark.parametrize("value", ["app.example.com", "https://app.example.com/"])
def test_a_malformed_origin_stops_the_server_saying_why(start_server, tmp_path, value):
    from tests.e2e.conftest import isolated_environment, launch

    with isolated_environment(tmp_path / "bad", embedded=True) as env:
        env["CORS_ALLOWED_ORIGINS"] = value
        server = launch(env, tmp_path / "bad", wait=False)
        code = server.process.wait(timeout=60)
        server.stop()
    assert code != 0
    assert f"CORS_ALLOWED_ORIGINS: {value!r} is not an origin" in server.log()
