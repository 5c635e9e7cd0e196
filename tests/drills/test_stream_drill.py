"""Drill: a subscriber cut off during a burst of runs resumes from its last cursor and gets
exactly the events it missed, each once.

A member loads `logs { streamCursor }` and subscribes to `automationLogs` and `actionUpdates`
after it, over a real WebSocket (graphql-transport-ws). A burst of `updateProduct` mutations
(4 clients at once, one run each: 1,000 runs, 6 events a run) starts. Midway the subscriber
loses its connection (embedded: dropped without a goodbye; distributed: its server process is
killed with SIGKILL), stays away while the burst goes on, then subscribes again with each
subscription's last cursor (distributed: on the other server), during the rest of the burst, and
reads until it has the organization's last event. Checked against the database afterwards:

- what the two connections received, together, is exactly the organization's stream after the
  starting cursor, as the journal has it: the same set of (cursor, run, seq, status), every
  position once (no duplicate at the hand-off, none missing), in increasing cursor order per
  subscription;
- every run of the burst is there, and each run's last event received is its log's final state
  in the database (id, seq, status).

Embedded: one `serve`. Distributed: two `serve --no-worker` processes and a `run_huey` worker on
PostgreSQL and Redis; mutations go to server B, the subscriber starts on server A.
"""

import asyncio
import base64
import contextlib
import json
import signal
import threading

import httpx
import pytest

from tests.drills.conftest import size
from tests.e2e.conftest import isolated_environment, launch
from tests.e2e.stream_client import ACTIONS, LOGS, StreamClient
from tests.e2e.test_subscriptions import distributed, huey_worker

pytestmark = pytest.mark.slow

UPDATE_PRODUCT = """mutation($id: ID!, $input: ProductUpdateInput!) {
  updateProduct(id: $id, input: $input) { id }
}"""
CREATE_RULE = """mutation($input: RuleInput!) { createRule(input: $input) { id } }"""
STREAM_CURSOR = "query($org: ID!) { logs(organization: $org, first: 1) { streamCursor } }"
CLIENTS = 4

# What the database holds, printed as JSON by `manage.py shell` on the servers' storage.
DATABASE_VIEW = """
import json
from automation.core.models import AutomationLog
from automation.core.system_models import StreamEvent
org = {org}
events = []
for position, text in StreamEvent.objects.filter(
        organization_id=org, position__gt={after}).order_by("position").values_list(
        "position", "message"):
    message = json.loads(text)
    if "log" in message:
        events.append(["L", position, message["log"]["id"], message["log"]["seq"],
                       message["log"]["status"]])
    else:
        events.append(["A", position, message["log_id"], message["seq"],
                       message["action"]["status"]])
logs = list(AutomationLog.objects.filter(organization_id=org, rule__name="Burst")
            .values_list("id", "seq", "status"))
print(json.dumps({{"events": events, "logs": logs}}))
"""


def position(cursor: str) -> int:
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    return int(raw.rsplit(":", 1)[1])


class Burst:
    """`runs` updateProduct mutations, CLIENTS at a time, each on its own product, in a thread."""

    def __init__(self, server, token: str, product_ids: list[str]):
        self.server, self.token, self.product_ids = server, token, product_ids
        self.sent = 0
        self.errors: list = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()

    def _run(self):
        queue = list(reversed(self.product_ids))

        def client():
            with httpx.Client(timeout=60) as http:
                while True:
                    with self.lock:
                        if not queue:
                            return
                        product = queue.pop()
                    body = {
                        "query": UPDATE_PRODUCT,
                        "variables": {"id": product, "input": {"stock": 7}},
                    }
                    answer = http.post(
                        f"{self.server.base_url}/graphql/",
                        json=body,
                        headers={"Authorization": f"Bearer {self.token}"},
                    ).json()
                    with self.lock:
                        if answer.get("errors"):
                            self.errors.append(answer["errors"])
                        self.sent += 1

        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    async def wait_sent(self, count: int, timeout: float = 600) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.sent < count and self.thread.is_alive():
            assert loop.time() < deadline, f"only {self.sent} mutations sent"
            await asyncio.sleep(0.05)


def prepare(server, member, runs: int) -> list[str]:
    """The rule (UPDATE_RECORD on every stock change) and `runs` products, made in bulk."""
    rule = {
        "organization": member.organization_id,
        "name": "Burst",
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
    answer = server.graphql(CREATE_RULE, {"input": rule}, member.token).json()
    assert not answer.get("errors"), answer
    code = (
        "from catalog.models import Product\n"
        f"made = Product.objects.bulk_create([Product(organization_id={member.organization_id}, "
        f"name=f'Burst {{n}}') for n in range({runs})])\n"
        "print(' '.join(str(product.pk) for product in made))\n"
    )
    output = server.manage("shell", "--no-imports", "-c", code).stdout
    return output.strip().splitlines()[-1].split()


def stream_cursor(server, member) -> str:
    answer = server.graphql(STREAM_CURSOR, {"org": member.organization_id}, member.token).json()
    assert not answer.get("errors"), answer
    return answer["data"]["logs"]["streamCursor"]


def database_view(server, member, after: int) -> dict:
    code = DATABASE_VIEW.format(org=member.organization_id, after=after)
    output = server.manage("shell", "--no-imports", "-c", code).stdout
    return json.loads(output.strip().splitlines()[-1])


async def all_finished(server, member, runs: int, timeout: float = 600) -> dict:
    """The database view once every run of the burst is finished."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        view = await asyncio.to_thread(database_view, server, member, 0)
        statuses = [status for _, _, status in view["logs"]]
        if len(statuses) == runs and all(s in ("SUCCEEDED", "FAILED") for s in statuses):
            return view
        assert loop.time() < deadline, f"runs not finished: {len(statuses)} logs"
        await asyncio.sleep(1)


def received(clients: list[StreamClient]) -> tuple[list, list]:
    """(log events, action events) of every connection, in order, as database-view rows."""
    logs, actions = [], []
    for client in clients:
        for data in client.events.get("logs", []):
            log = data["automationLogs"]
            logs.append(["L", position(log["cursor"]), int(log["id"]), log["seq"], log["status"]])
        for data in client.events.get("actions", []):
            update = data["actionUpdates"]
            actions.append(
                [
                    "A",
                    position(update["cursor"]),
                    int(update["logId"]),
                    update["seq"],
                    update["action"]["status"],
                ]
            )
    return logs, actions


async def drill(subscribe_first, subscribe_then, mutate_on, member, cut) -> dict:
    runs = size("stream_runs")
    products = await asyncio.to_thread(prepare, mutate_on, member, runs)
    start = await asyncio.to_thread(stream_cursor, subscribe_first, member)
    org = member.organization_id

    first = StreamClient(subscribe_first, member.token)
    await first.connect()
    await first.subscribe("logs", LOGS, {"org": org, "after": start})
    await first.subscribe("actions", ACTIONS, {"org": org, "after": start})
    await asyncio.sleep(1)  # no protocol acknowledges a started subscription

    burst = Burst(mutate_on, member.token, products)
    burst.start()
    await burst.wait_sent(runs // 3)
    await first.wait_for(lambda: len(first.events["logs"]) >= 100, what="the first events")
    await cut(first)
    cut_at = burst.sent
    await burst.wait_sent(2 * runs // 3)  # the subscriber is away meanwhile

    then = StreamClient(subscribe_then, member.token)
    await then.connect()
    await then.subscribe(
        "logs", LOGS, {"org": org, "after": first.last_cursor("logs", "automationLogs")}
    )
    await then.subscribe(
        "actions",
        ACTIONS,
        {"org": org, "after": first.last_cursor("actions", "actionUpdates") or start},
    )
    resumed_at = burst.sent
    await asyncio.to_thread(burst.thread.join, 600)
    assert not burst.errors, burst.errors[:3]
    view = await all_finished(mutate_on, member, runs)
    head = max(row[1] for row in view["events"])
    last_action = max(row[1] for row in view["events"] if row[0] == "A")
    await then.wait_for(
        lambda: (
            then.last_cursor("logs", "automationLogs") is not None
            and position(then.last_cursor("logs", "automationLogs")) >= head
            and then.last_cursor("actions", "actionUpdates") is not None
            and position(then.last_cursor("actions", "actionUpdates")) >= last_action
        ),
        timeout=300,
        what="the last event",
    )
    await asyncio.sleep(1)  # anything extra (a duplicate) would have come by now
    await then.stop()

    after = position(start)
    expected = [row for row in view["events"] if row[1] > after]
    logs, actions = received([first, then])
    # Each subscription's events in increasing cursor order, on each connection.
    for client in (first, then):
        client_logs, client_actions = received([client])
        for rows in (client_logs, client_actions):
            assert [row[1] for row in rows] == sorted({row[1] for row in rows})
    # Exactly the stream after the starting cursor: nothing missing, nothing twice.
    assert len(logs) + len(actions) == len(expected)
    assert sorted(logs + actions) == sorted(expected)
    assert sorted(row[1] for row in expected) == list(range(after + 1, head + 1))
    # Every run, its last event received being its final state in the database.
    last_of = {}
    for row in sorted(logs, key=lambda row: row[1]):
        last_of[row[2]] = (row[2], row[3], row[4])
    assert sorted(last_of.values()) == sorted(tuple(log) for log in view["logs"])
    assert len(view["logs"]) == runs
    report = {
        "runs": runs,
        "events": len(expected),
        "before_cut": len(first.events["logs"]) + len(first.events["actions"]),
        "after_resume": len(then.events["logs"]) + len(then.events["actions"]),
        "cut_after_mutations": cut_at,
        "resumed_after_mutations": resumed_at,
    }
    print(f"\nstream drill: {report}")
    return report


async def drop(client: StreamClient) -> None:
    await client.drop()


@pytest.mark.embedded_only
async def test_embedded_subscriber_cut_off_mid_burst_resumes_with_exactly_what_it_missed(
    tmp_path,
):
    data_dir = tmp_path / "embedded"
    with isolated_environment(data_dir, embedded=True) as env:
        server = launch(env, data_dir)
        try:
            member = server.create_member("drill", "stream-drill")
            await drill(server, server, server, member, drop)
        finally:
            server.stop()


@distributed
async def test_distributed_subscriber_whose_server_is_killed_resumes_on_another(tmp_path):
    data_dir = tmp_path / "distributed"
    with contextlib.ExitStack() as stack:
        env = stack.enter_context(isolated_environment(data_dir, embedded=False))
        server_a = launch(env, data_dir, ["--no-worker"])
        stack.callback(server_a.stop)
        server_b = launch(env, data_dir, ["--no-worker", "--skip-migrate"])
        stack.callback(server_b.stop)
        stack.enter_context(huey_worker(env, data_dir))
        member = server_a.create_member("drill", "stream-drill")

        async def kill_server_a(client: StreamClient) -> None:
            server_a.process.send_signal(signal.SIGKILL)
            server_a.process.wait(30)
            await client.wait_for(lambda: client._reader.done(), 30, "the connection to end")
            await client.stop()

        await drill(server_a, server_b, server_b, member, kill_server_a)
