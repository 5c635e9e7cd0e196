"""Drill: the process executing runs is killed with SIGKILL while runs wait, and nothing is lost
or repeated.

Two runs wait at once, created over GraphQL: one holds (a rule with `holdFor: "PT2S"` fired by
an update) and one stands at a WAIT of 2 s between two CREATE_RECORD actions (runRule). Once both
are WAITING, the process that executed them is killed with SIGKILL (embedded: the `serve`
process, workers and scheduler inside it; distributed: the `run_huey` worker, beside a
`serve --no-worker`), stays down past their due time, and is started again. Checked over GraphQL
afterwards: both runs SUCCEEDED, resumed once (each action's attempt 1, each record created once,
the WAIT waited at least its 2 s), the hold re-checked after its time.
"""

import contextlib
import datetime
import signal
import time

import pytest

from tests.e2e.conftest import isolated_environment, launch
from tests.e2e.test_subscriptions import distributed, huey_worker
from tests.e2e.test_waits import FINISHED, RUN, Member, low_stock_rule

pytestmark = pytest.mark.slow

UPDATE_PRODUCT = """mutation($id: ID!) { updateProduct(id: $id, input: {stock: 3}) { id } }"""
CATEGORIES = """query($org: ID!) { categories(organization: $org) { name } }"""
DOWN_SECONDS = 3  # longer than the waits: they fall due while nothing runs


def create_category(name):
    return {
        "actionType": "CREATE_RECORD",
        "parameters": {"model": "catalog.category", "fields": {"name": name}},
    }


def start_waiting(member: Member) -> tuple[str, str]:
    """The held run and the run at its WAIT, both WAITING: (held log id, waiting log id)."""
    held_rule = low_stock_rule(member, "Held", "PT2S", [create_category("Held {{ object.name }}")])
    two_steps = member.rule(
        name="Two steps",
        triggerType="MANUAL",
        actions=[
            create_category("Before {{ object.name }}"),
            {"actionType": "WAIT", "parameters": {"seconds": 2}},
            create_category("After {{ results.0.record.name }}"),
        ],
    )
    lamp, desk = member.product("Lamp", 10), member.product("Desk", 10)
    member.ok(UPDATE_PRODUCT, {"id": lamp})
    (held,) = [run["id"] for run in member.runs_of(held_rule)]
    waiting = member.ok(RUN, {"id": two_steps, "obj": desk})["runRule"]["id"]
    for log_id in (held, waiting):
        assert member.until(log_id, {"WAITING"} | FINISHED)["status"] == "WAITING"
    return held, waiting


def check_resumed_once(member: Member, held: str, waiting: str) -> None:
    held_log, waiting_log = member.until(held, FINISHED), member.until(waiting, FINISHED)
    assert held_log["status"] == "SUCCEEDED", held_log
    assert held_log["hold"]["met"] is True
    assert _at(held_log["hold"]["checkedAt"]) >= _at(held_log["hold"]["until"])
    assert [a["attempt"] for a in held_log["actionLogs"]] == [1]
    assert waiting_log["status"] == "SUCCEEDED", waiting_log
    assert [a["attempt"] for a in waiting_log["actionLogs"]] == [1, 1, 1]
    assert waiting_log["actionLogs"][1]["durationMs"] >= 2000
    names = sorted(
        c["name"] for c in member.ok(CATEGORIES, {"org": member.organization})["categories"]
    )
    assert names == ["After Before Desk", "Before Desk", "Held Lamp"]


def _at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


@pytest.mark.embedded_only
def test_embedded_server_killed_while_runs_wait(tmp_path):
    data_dir = tmp_path / "embedded"
    with isolated_environment(data_dir, embedded=True) as env:
        server = launch(env, data_dir)
        try:
            member = Member(server, "drill")
            held, waiting = start_waiting(member)
            server.process.send_signal(signal.SIGKILL)
            server.process.wait(30)
            server.stop()
            time.sleep(DOWN_SECONDS)
            server = launch(env, data_dir, ["--skip-migrate"])
            member.server = server
            check_resumed_once(member, held, waiting)
        finally:
            server.stop()


@distributed
def test_distributed_worker_killed_while_runs_wait(tmp_path):
    data_dir = tmp_path / "distributed"
    with contextlib.ExitStack() as stack:
        env = stack.enter_context(isolated_environment(data_dir, embedded=False))
        server = launch(env, data_dir, ["--no-worker"])
        stack.callback(server.stop)
        member = Member(server, "drill")
        with huey_worker(env, data_dir) as first:
            held, waiting = start_waiting(member)
            first.send_signal(signal.SIGKILL)
            first.wait(30)
        time.sleep(DOWN_SECONDS)
        with huey_worker(env, data_dir):
            check_resumed_once(member, held, waiting)
