"""The resumable run stream end to end: real servers, a real WebSocket client.

A member loads `logs { streamCursor }`, runs happen while nobody listens, and a subscription with
`after: streamCursor` gets exactly those runs' events from the journal, oldest first, then the
live ones, with no gap and no duplicate; a queried run's `cursor` is its latest event's. Bad
cursors get their codes: malformed VALIDATION_ERROR, another organization's NOT_FOUND, one older
than the journal keeps CURSOR_EXPIRED with the oldest cursor still accepted.

Embedded: one `serve`. Distributed: two `serve --no-worker` and a `run_huey` worker on
PostgreSQL and Redis; the subscriber is on server A, the mutations go to server B.
"""

import asyncio
import contextlib
import subprocess
import sys

import pytest

from tests.e2e.conftest import REPO_ROOT, isolated_environment, json_of, launch
from tests.e2e.stream_client import ACTIONS, LOGS, StreamClient, error_of
from tests.e2e.test_subscriptions import distributed, huey_worker

CREATE_PRODUCT = """mutation($input: ProductInput!) { createProduct(input: $input) { id } }"""
UPDATE_PRODUCT = """mutation($id: ID!, $input: ProductUpdateInput!) {
  updateProduct(id: $id, input: $input) { id }
}"""
CREATE_RULE = """mutation($input: RuleInput!) { createRule(input: $input) { id } }"""
STREAM_CURSOR = """query($org: ID!) {
  logs(organization: $org, first: 50) { streamCursor edges { node { id seq status cursor } } }
}"""
FINAL = {"SUCCEEDED", "FAILED", "SKIPPED", "PARTIAL"}
# Per run: PENDING, RUNNING (claimed, with its plan: one transaction), SUCCEEDED; its action
# RUNNING, SUCCEEDED.
LOG_EVENTS, ACTION_EVENTS = 3, 2


def ok(response) -> dict:
    body = json_of(response)
    assert not body.get("errors"), body
    return body["data"]


async def call(server, query, variables, token) -> dict:
    return ok(await asyncio.to_thread(server.graphql, query, variables, token))


async def setup(server, member, name="Describe") -> str:
    """A rule that, on every product update, writes the description; returns a product id."""
    token, org = member.token, member.organization_id
    product = await call(
        server, CREATE_PRODUCT, {"input": {"organization": org, "name": "Lamp"}}, token
    )
    rule = {
        "organization": org,
        "name": name,
        "triggerType": "EVENT",
        "model": "catalog.product",
        "triggerEvent": "UPDATED",
        "watchedFields": ["stock"],
        "actions": [
            {
                "actionType": "UPDATE_RECORD",
                "parameters": {"fields": {"description": "stock {{ object.stock }}"}},
            }
        ],
    }
    await call(server, CREATE_RULE, {"input": rule}, token)
    return product["createProduct"]["id"]


async def page(server, member) -> dict:
    return (await call(server, STREAM_CURSOR, {"org": member.organization_id}, member.token))[
        "logs"
    ]


async def runs_finished(server, member, count: int) -> dict:
    """The logs page once `count` runs are finished (polling the API, 60 s at most)."""
    for _ in range(600):
        logs = await page(server, member)
        nodes = [edge["node"] for edge in logs["edges"]]
        if len(nodes) >= count and all(node["status"] in FINAL for node in nodes):
            return logs
        await asyncio.sleep(0.1)
    raise AssertionError(f"runs not finished: {logs}")


async def resume_scenario(subscribe_to, mutate_on, member):
    token, org = member.token, member.organization_id
    product = await setup(mutate_on, member)
    start = (await page(subscribe_to, member))["streamCursor"]
    for stock in (1, 2, 3):  # while nobody listens
        await call(mutate_on, UPDATE_PRODUCT, {"id": product, "input": {"stock": stock}}, token)
    await runs_finished(subscribe_to, member, 3)

    client = StreamClient(subscribe_to, token)
    await client.connect()
    try:
        await client.subscribe("logs", LOGS, {"org": org, "after": start})
        await client.subscribe("actions", ACTIONS, {"org": org, "after": start})
        await client.wait_for(
            lambda: (
                len(client.events["logs"]) >= 3 * LOG_EVENTS
                and len(client.events["actions"]) >= 3 * ACTION_EVENTS
            ),
            what="the replay",
        )
        # Then live: a fourth run.
        await call(mutate_on, UPDATE_PRODUCT, {"id": product, "input": {"stock": 4}}, token)
        await client.wait_for(
            lambda: (
                len(client.events["logs"]) >= 4 * LOG_EVENTS
                and len(client.events["actions"]) >= 4 * ACTION_EVENTS
            ),
            what="the live run",
        )
        finished = await runs_finished(subscribe_to, member, 4)
        await asyncio.sleep(0.5)  # anything extra (a duplicate) would have come by now
    finally:
        await client.stop()

    logs = [event["automationLogs"] for event in client.events["logs"]]
    actions = [event["actionUpdates"] for event in client.events["actions"]]
    assert len(logs) == 4 * LOG_EVENTS and len(actions) == 4 * ACTION_EVENTS
    runs = {log["id"] for log in logs}
    assert len(runs) == 4
    for run in runs:  # each run's events in their order (runs may overlap)
        events = [(log["seq"], log["status"]) for log in logs if log["id"] == run]
        assert [status for _, status in events] == ["PENDING", "RUNNING", "SUCCEEDED"]
        assert [seq for seq, _ in events] == sorted(seq for seq, _ in events)
        updates = [(a["action"]["status"]) for a in actions if a["logId"] == run]
        assert updates == ["RUNNING", "SUCCEEDED"]
    # One order for both subscriptions: the organization's stream, no position twice.
    cursors = [log["cursor"] for log in logs] + [action["cursor"] for action in actions]
    assert len(set(cursors)) == len(cursors)
    positions = sorted(cursors, key=_position)
    assert [_position(cursor) for cursor in positions] == list(
        range(_position(start) + 1, _position(start) + 1 + len(cursors))
    )
    assert [log["cursor"] for log in logs] == sorted((log["cursor"] for log in logs), key=_position)
    # A queried run's cursor is its latest event's, and the page's streamCursor the latest.
    latest = {log["id"]: log["cursor"] for log in logs}
    assert {edge["node"]["id"]: edge["node"]["cursor"] for edge in finished["edges"]} == latest
    assert finished["streamCursor"] == positions[-1]


def _position(cursor: str) -> int:
    import base64

    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    return int(raw.rsplit(":", 1)[1])


async def bad_cursors_scenario(server, member, stranger):
    token, org = member.token, member.organization_id
    product = await setup(server, member, "Describe again")
    await call(server, UPDATE_PRODUCT, {"id": product, "input": {"stock": 9}}, token)
    logs = await page(server, member)
    await runs_finished(server, member, len(logs["edges"]) or 1)
    mine = (await page(server, member))["streamCursor"]
    theirs = (await page(server, stranger))["streamCursor"]

    for query in (LOGS, ACTIONS):
        malformed = await error_of(server, token, query, {"org": org, "after": "not-a-cursor"})
        assert malformed["extensions"]["code"] == "VALIDATION_ERROR", malformed
        other = await error_of(server, token, query, {"org": org, "after": theirs})
        assert other["extensions"]["code"] == "NOT_FOUND", other
        ahead = _cursor(org, _position(mine) + 100)  # a position the stream has not reached
        ahead_error = await error_of(server, token, query, {"org": org, "after": ahead})
        assert ahead_error["extensions"]["code"] == "VALIDATION_ERROR", ahead_error

    # Retention at 0 hours purges every event: the start of the stream is gone.
    purge = subprocess.run(
        [sys.executable, "manage.py", "purge_logs"],
        cwd=REPO_ROOT,
        env={**server.env, "AUTOMATION_STREAM_RETENTION_HOURS": "0"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert purge.returncode == 0, purge.stderr
    assert "stream event(s)" in purge.stdout
    for query in (LOGS, ACTIONS):
        expired = await error_of(server, token, query, {"org": org, "after": _cursor(org, 0)})
        assert expired["extensions"]["code"] == "CURSOR_EXPIRED", expired
        assert expired["extensions"]["oldestCursor"] == mine
    # The oldest cursor still works: it is where the journal starts.
    client = StreamClient(server, token)
    await client.connect()
    try:
        await client.subscribe("logs", LOGS, {"org": org, "after": mine})
        await asyncio.sleep(1)
        assert client.failure is None and client.events["logs"] == []
    finally:
        await client.stop()


def _cursor(organization_id, position) -> str:
    import base64

    raw = f"s1:{organization_id}:{position}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# --- Embedded ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded_server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("stream-server")
    with isolated_environment(data_dir, embedded=True) as env:
        server = launch(env, data_dir)
        try:
            yield server
        finally:
            server.stop()


@pytest.mark.embedded_only
async def test_embedded_resume_replays_missed_events_then_goes_live(embedded_server):
    member = embedded_server.create_member("stream-alice", "stream-acme")
    await resume_scenario(embedded_server, embedded_server, member)


@pytest.mark.embedded_only
async def test_embedded_bad_cursors_get_their_codes(embedded_server):
    member = embedded_server.create_member("stream-bob", "stream-globex")
    stranger = embedded_server.create_member("stream-eve", "stream-initech")
    await bad_cursors_scenario(embedded_server, member, stranger)


# --- Distributed ---------------------------------------------------------------------------------


@contextlib.contextmanager
def two_servers_and_a_worker(tmp_path):
    data_dir = tmp_path / "distributed"
    with contextlib.ExitStack() as stack:
        env = stack.enter_context(isolated_environment(data_dir, embedded=False))
        assert env.get("REDIS_URL") and env.get("DATABASE_URL")
        server_a = launch(env, data_dir, ["--no-worker"])
        stack.callback(server_a.stop)
        server_b = launch(env, data_dir, ["--no-worker", "--skip-migrate"])
        stack.callback(server_b.stop)
        stack.enter_context(huey_worker(env, data_dir))
        yield server_a, server_b


@distributed
async def test_distributed_resume_replays_missed_events_then_goes_live(tmp_path):
    with two_servers_and_a_worker(tmp_path) as (server_a, server_b):
        member = server_a.create_member("stream-alice", "stream-acme")
        await resume_scenario(server_a, server_b, member)
        stranger = server_a.create_member("stream-eve", "stream-initech")
        await bad_cursors_scenario(server_b, member, stranger)
