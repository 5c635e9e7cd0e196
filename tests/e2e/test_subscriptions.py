"""Live subscriptions end to end: real server processes, real WebSocket clients, real runs.

Scenario (both modes): an EVENT rule on product UPDATED calls a webhook (a local HTTP server
started here) and updates the product. A member subscribes (the `gql` client over
graphql-transport-ws, and a raw `websockets` client speaking legacy graphql-ws), another
organization's member subscribes to theirs, and the product is updated through the GraphQL
mutation `updateProduct`. The member sees the full ordered sequence of run and action events; the
other organization sees nothing.

- embedded: one `manage.py serve` (in-memory channel layer, in-process Huey consumer);
- distributed: two `manage.py serve --no-worker` processes and one `manage.py run_huey` worker on
  PostgreSQL and Redis (DATABASE_URL, REDIS_URL from the environment); the subscriber is connected
  to server A, the mutation goes to server B, the worker runs the rule.
"""

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import websockets
from gql import Client, gql
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport
from websockets.exceptions import ConnectionClosed

from tests.e2e.conftest import REPO_ROOT, isolated_environment, json_of, launch

EVENT_TIMEOUT = 30
LOGS = """subscription Logs($org: ID!, $rule: ID) {
  automationLogs(organization: $org, rule: $rule) {
    id seq status rule { id name } actionLogs { order actionType status }
  }
}"""
ACTIONS = """subscription Actions($org: ID!) {
  actionUpdates(organization: $org) { logId ruleId seq action { order actionType status result } }
}"""
CREATE_PRODUCT = """mutation($input: ProductInput!) { createProduct(input: $input) { id } }"""
UPDATE_PRODUCT = """mutation($id: ID!, $input: ProductUpdateInput!) {
  updateProduct(id: $id, input: $input) { id status }
}"""
PRODUCT = "query($id: ID!) { product(id: $id) { description } }"
CREATE_RULE = """mutation($input: RuleInput!) { createRule(input: $input) { id name } }"""

# PENDING (seq 0) -> claimed (1) -> conditions met, actions listed (2) -> 4 action steps (3-6,
# published as actionUpdates) -> SUCCEEDED (7).
# The claim and the recorded plan commit together: one RUNNING event, with the later seq.
EXPECTED_LOGS = [("PENDING", 0), ("RUNNING", 2), ("SUCCEEDED", 7)]
EXPECTED_ACTIONS = [
    (3, 0, "CALL_WEBHOOK", "RUNNING"),
    (4, 0, "CALL_WEBHOOK", "SUCCEEDED"),
    (5, 1, "UPDATE_RECORD", "RUNNING"),
    (6, 1, "UPDATE_RECORD", "SUCCEEDED"),
]


class WebhookTarget:
    """A local HTTP server that records the JSON bodies posted to it and answers 200."""

    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                received.append(json.loads(self.rfile.read(length) or b"null"))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}')

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook_target():
    target = WebhookTarget()
    yield target
    target.close()


@pytest.fixture
def private_webhooks(monkeypatch):
    """Servers started after this may call webhooks on 127.0.0.1 (the test's target)."""
    monkeypatch.setenv("AUTOMATION_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true")


def ws_url(server) -> str:
    return server.base_url.replace("http://", "ws://") + "/graphql/"


def gql_client(server, token) -> Client:
    transport = WebsocketsTransport(
        url=ws_url(server),
        init_payload={"Authorization": f"Bearer {token}"},
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
    )
    return Client(transport=transport, fetch_schema_from_transport=False)


def request(query: str, variables: dict):
    operation = gql(query)
    operation.variable_values = variables
    return operation


def ok(response) -> dict:
    body = json_of(response)
    assert not body.get("errors"), body
    return body["data"]


async def call(server, query, variables, token) -> dict:
    return ok(await asyncio.to_thread(server.graphql, query, variables, token))


async def collect(stream, count: int, into: list) -> None:
    """Append `count` results of an async iterator to `into`."""
    async for item in stream:
        into.append(item)
        if len(into) >= count:
            return


async def legacy_subscription(server, token, query, variables, count, into, ready):
    """A raw graphql-ws (legacy protocol) client: init, start, collect `count` data payloads."""
    async with websockets.connect(ws_url(server), subprotocols=["graphql-ws"]) as ws:
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        )
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(
            json.dumps(
                {"id": "1", "type": "start", "payload": {"query": query, "variables": variables}}
            )
        )
        ready.set()
        while len(into) < count:
            message = json.loads(await ws.recv())
            if message["type"] == "ka":
                continue
            assert message["type"] == "data" and not message["payload"].get("errors"), message
            into.append(message["payload"]["data"])


async def run_scenario(subscribe_to, mutate_on, alice, bob, webhook):
    """Subscribe on `subscribe_to`, mutate on `mutate_on`; assert what each subscriber saw."""
    token = alice.token
    product = (
        await call(
            mutate_on,
            CREATE_PRODUCT,
            {"input": {"organization": alice.organization_id, "name": "Lamp", "status": "DRAFT"}},
            token,
        )
    )["createProduct"]
    rule = (
        await call(
            mutate_on,
            CREATE_RULE,
            {
                "input": {
                    "organization": alice.organization_id,
                    "name": "Announce activation",
                    "triggerType": "EVENT",
                    "model": "catalog.product",
                    "triggerEvent": "UPDATED",
                    "conditions": {
                        "conditions": [{"field": "status", "operator": "EQUALS", "value": "ACTIVE"}]
                    },
                    "actions": [
                        {
                            "actionType": "CALL_WEBHOOK",
                            "parameters": {"url": webhook.url, "body": {"id": "{{ object.id }}"}},
                        },
                        {
                            "actionType": "UPDATE_RECORD",
                            "parameters": {"fields": {"description": "Hooked {{ object.name }}"}},
                        },
                    ],
                }
            },
            token,
        )
    )["createRule"]

    logs, actions, legacy_logs, bob_logs, bob_actions = [], [], [], [], []
    legacy_ready = asyncio.Event()
    async with (
        gql_client(subscribe_to, token) as alice_session,
        gql_client(subscribe_to, bob.token) as bob_session,
    ):
        org = {"org": alice.organization_id}
        bob_org = {"org": bob.organization_id}
        tasks = [
            asyncio.create_task(
                collect(alice_session.subscribe(request(LOGS, org)), len(EXPECTED_LOGS), logs)
            ),
            asyncio.create_task(
                collect(alice_session.subscribe(request(ACTIONS, org)), 4, actions)
            ),
            asyncio.create_task(
                legacy_subscription(
                    subscribe_to,
                    token,
                    LOGS,
                    {**org, "rule": rule["id"]},
                    len(EXPECTED_LOGS),
                    legacy_logs,
                    legacy_ready,
                )
            ),
        ]
        bob_tasks = [
            asyncio.create_task(
                collect(bob_session.subscribe(request(LOGS, bob_org)), 1, bob_logs)
            ),
            asyncio.create_task(
                collect(bob_session.subscribe(request(ACTIONS, bob_org)), 1, bob_actions)
            ),
        ]
        await asyncio.wait_for(legacy_ready.wait(), EVENT_TIMEOUT)
        await asyncio.sleep(1)  # no protocol acknowledges a started subscription

        await call(
            mutate_on, UPDATE_PRODUCT, {"id": product["id"], "input": {"status": "ACTIVE"}}, token
        )
        done, pending = await asyncio.wait(tasks, timeout=EVENT_TIMEOUT)
        for task in done:
            task.result()  # re-raise a client's failure
        assert not pending, f"timed out: logs={logs} actions={actions} legacy={legacy_logs}"
        await asyncio.sleep(1)  # the other organization's subscribers had time to get something
        for task in bob_tasks:
            task.cancel()

    assert [(log["automationLogs"]["status"], log["automationLogs"]["seq"]) for log in logs] == (
        EXPECTED_LOGS
    )
    assert {log["automationLogs"]["id"] for log in logs} == {logs[0]["automationLogs"]["id"]}
    assert logs[0]["automationLogs"]["rule"] == rule
    assert [
        (a["automationLogs"]["status"], a["automationLogs"]["seq"]) for a in legacy_logs
    ] == EXPECTED_LOGS
    assert [a["automationLogs"] for a in legacy_logs] == [log["automationLogs"] for log in logs]
    updates = [a["actionUpdates"] for a in actions]
    assert [
        (u["seq"], u["action"]["order"], u["action"]["actionType"], u["action"]["status"])
        for u in updates
    ] == EXPECTED_ACTIONS
    assert {(u["logId"], u["ruleId"]) for u in updates} == {
        (logs[0]["automationLogs"]["id"], rule["id"])
    }
    assert updates[1]["action"]["result"]["status_code"] == 200
    assert [entry["status"] for entry in logs[-1]["automationLogs"]["actionLogs"]] == [
        "SUCCEEDED",
        "SUCCEEDED",
    ]
    # A template that is a whole placeholder keeps the value's type: the id arrives as a number.
    assert webhook.received == [{"id": int(product["id"])}]
    assert (await call(mutate_on, PRODUCT, {"id": product["id"]}, token))["product"] == {
        "description": "Hooked Lamp"
    }
    assert bob_logs == [] and bob_actions == []


# --- Embedded ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded_server(tmp_path_factory):
    """One embedded server for the tests below (start-up is seconds): each makes the members it
    needs (the same names get the same users) and changes nothing another relies on. It may call
    webhooks on 127.0.0.1 (the test's target)."""
    data_dir = tmp_path_factory.mktemp("embedded-server")
    with isolated_environment(data_dir, embedded=True) as env:
        env["AUTOMATION_WEBHOOK_ALLOW_PRIVATE_NETWORKS"] = "true"
        server = launch(env, data_dir)
        try:
            yield server
        finally:
            server.stop()


@pytest.mark.embedded_only
async def test_embedded_server_streams_a_run_to_its_members_only(embedded_server, webhook_target):
    alice = embedded_server.create_member("alice", "acme")
    bob = embedded_server.create_member("bob", "globex")
    await run_scenario(embedded_server, embedded_server, alice, bob, webhook_target)


async def closed_with(server, payload) -> tuple[int, str]:
    """Connect over graphql-transport-ws, send connection_init; the close code and reason."""
    async with websockets.connect(ws_url(server), subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        return closed.value.rcvd.code, closed.value.rcvd.reason


@pytest.mark.embedded_only
async def test_missing_bad_and_revoked_tokens_are_refused_with_the_reason(embedded_server):
    carol = embedded_server.create_member("carol", "acme")
    embedded_server.manage(
        "shell",
        "--no-imports",
        "-c",
        "from accounts.models import ApiToken\n"
        "for token in ApiToken.objects.filter(user__username='carol'): token.revoke()\n",
    )
    code, reason = await closed_with(embedded_server, {})
    assert (code, reason.split(":")[0]) == (4403, "No credentials")
    bogus = {"Authorization": "Bearer are_bogus"}
    assert await closed_with(embedded_server, bogus) == (4403, "Invalid token.")
    revoked = {"Authorization": f"Bearer {carol.token}"}
    assert await closed_with(embedded_server, revoked) == (4403, "Revoked token.")
    code, reason = await closed_with(embedded_server, {"Authorization": f"Token {carol.token}"})
    assert (code, reason) == (
        4403,
        'Unsupported Authorization scheme: use "Authorization: Bearer <token>".',
    )

    async with websockets.connect(ws_url(embedded_server), subprotocols=["graphql-ws"]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(await ws.recv())["type"] == "connection_error"


@pytest.mark.embedded_only
async def test_other_organization_subscription_is_not_found(embedded_server):
    alice = embedded_server.create_member("alice", "acme")
    bob = embedded_server.create_member("bob", "globex")
    async with gql_client(embedded_server, alice.token) as session:
        stream = session.subscribe(request(LOGS, {"org": bob.organization_id}))
        with pytest.raises(TransportQueryError) as refused:
            await asyncio.wait_for(stream.__anext__(), 10)
    assert refused.value.errors[0]["extensions"]["code"] == "NOT_FOUND"
    assert refused.value.data is None


async def test_logging_out_ends_a_session_subscription(e2e_server):
    """GraphiQL's case: a subscription on the admin session's cookie, then a logout."""
    alice = e2e_server.create_member("alice-session", "session-org")
    e2e_server.manage(
        "shell",
        "--no-imports",
        "-c",
        "from django.contrib.auth import get_user_model\n"
        "user = get_user_model().objects.get(username='alice-session')\n"
        "user.is_staff = True\nuser.set_password('session-pass-w0rd')\nuser.save()\n",
    )
    rule = await call(
        e2e_server,
        CREATE_RULE,
        {
            "input": {
                "organization": alice.organization_id,
                "name": "By hand",
                "triggerType": "MANUAL",
            }
        },
        alice.token,
    )
    browser = await asyncio.to_thread(
        admin_session, e2e_server, "alice-session", "session-pass-w0rd"
    )
    cookie = f"sessionid={browser.cookies['sessionid']}"
    run = "mutation($id: ID!) { runRule(id: $id) { id } }"
    async with websockets.connect(
        ws_url(e2e_server),
        subprotocols=["graphql-transport-ws"],
        additional_headers={"Cookie": cookie},
    ) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "connection_ack"
        subscribe = {"query": LOGS, "variables": {"org": alice.organization_id}}
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": subscribe}))
        await asyncio.sleep(0.5)
        await call(e2e_server, run, {"id": rule["createRule"]["id"]}, alice.token)
        event = json.loads(await asyncio.wait_for(ws.recv(), EVENT_TIMEOUT))
        assert event["payload"]["data"]["automationLogs"]["status"] == "PENDING"

        await asyncio.to_thread(admin_logout, e2e_server, browser)
        await asyncio.sleep(1.5)  # the connection's last credential read is at most 1 s old
        await call(e2e_server, run, {"id": rule["createRule"]["id"]}, alice.token)
        ended = json.loads(await asyncio.wait_for(ws.recv(), EVENT_TIMEOUT))
        while ended["type"] == "next" and ended["payload"].get("data"):  # events of the first run
            ended = json.loads(await asyncio.wait_for(ws.recv(), EVENT_TIMEOUT))
        assert ended["payload"]["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"id": "1", "type": "complete"}


async def test_queries_and_mutations_run_over_websocket_with_gql(e2e_server):
    """`gql` over graphql-transport-ws, as a client that sends every operation on its socket:
    a mutation, a query, and a refused one, each with the HTTP answer's codes, and no
    traceback in the server's log (they used to fail with SynchronousOnlyOperation)."""
    dave = e2e_server.create_member("dave-ws", "ws-ops")
    eve = e2e_server.create_member("eve-ws", "ws-ops-other")
    async with gql_client(e2e_server, dave.token) as session:
        created = await session.execute(
            request(
                CREATE_PRODUCT,
                {"input": {"organization": dave.organization_id, "name": "Desk"}},
            )
        )
        product_id = created["createProduct"]["id"]
        read = await session.execute(request(PRODUCT, {"id": product_id}))
        assert read == {"product": {"description": ""}}
        with pytest.raises(TransportQueryError) as refused:
            await session.execute(
                request(
                    CREATE_PRODUCT,
                    {"input": {"organization": eve.organization_id, "name": "Chair"}},
                )
            )
        assert refused.value.errors[0]["extensions"]["code"] == "NOT_FOUND"
    assert "Traceback" not in e2e_server.log()
    assert "SynchronousOnlyOperation" not in e2e_server.log()


def admin_session(server, username: str, password: str) -> httpx.Client:
    """A browser logged in at /admin/login/ (with the CSRF cookie and token)."""
    browser = httpx.Client(base_url=server.base_url, timeout=30)
    browser.get("/admin/login/")
    answer = browser.post(
        "/admin/login/",
        data={
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": browser.cookies["csrftoken"],
            "next": "/admin/",
        },
    )
    assert answer.status_code == 302, answer.text[:300]
    return browser


def admin_logout(server, browser: httpx.Client) -> None:
    answer = browser.post(
        "/admin/logout/", data={"csrfmiddlewaretoken": browser.cookies["csrftoken"]}
    )
    assert answer.status_code == 200, answer.text[:300]


# --- Distributed ---------------------------------------------------------------------------------

distributed = pytest.mark.skipif(
    not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")),
    reason="needs DATABASE_URL (PostgreSQL) and REDIS_URL",
)


@contextlib.contextmanager
def huey_worker(env, data_dir):
    """`manage.py run_huey` against the servers' database and queue, stopped afterwards."""
    log_path = data_dir / "run_huey.log"
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "run_huey", "--workers", "2"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@distributed
async def test_distributed_subscriber_on_a_sees_runs_of_a_mutation_sent_to_b(
    tmp_path, private_webhooks, webhook_target
):
    data_dir = tmp_path / "distributed"
    with contextlib.ExitStack() as stack:
        env = stack.enter_context(isolated_environment(data_dir, embedded=False))
        assert env.get("REDIS_URL") and env.get("DATABASE_URL")
        server_a = launch(env, data_dir, ["--no-worker"])
        stack.callback(server_a.stop)
        server_b = launch(env, data_dir, ["--no-worker", "--skip-migrate"])
        stack.callback(server_b.stop)
        stack.enter_context(huey_worker(env, data_dir))
        alice = server_a.create_member("alice", "acme")
        bob = server_a.create_member("bob", "globex")
        await run_scenario(server_a, server_b, alice, bob, webhook_target)
