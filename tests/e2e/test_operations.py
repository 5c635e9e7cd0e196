"""Operating it, on real processes: /metrics of an embedded server and the metrics port of a
distributed worker after runs of every status (the counts, not only the names), the JSON log read
line by line, and /healthz turning 503 while the only worker is stopped and runs wait, then 200
when it is back.

The health test runs in the suite's mode (embedded: `serve --no-worker` beside a `run_huey` on the
same SQLite files; distributed: PostgreSQL and Redis) with tiny thresholds (2 s), so that a
stopped worker is noticed within seconds; it polls for the verdict with a generous deadline.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import REPO_ROOT, free_port, isolated_environment, launch

RUN_TIMEOUT_SECONDS = 60
FINISHED = {"SUCCEEDED", "SKIPPED", "FAILED", "PARTIAL"}

distributed = pytest.mark.skipif(
    not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")),
    reason="needs DATABASE_URL (PostgreSQL) and REDIS_URL",
)

CREATE_PRODUCT = "mutation($input: ProductInput!) { createProduct(input: $input) { id } }"
CREATE_RULE = "mutation($input: RuleInput!) { createRule(input: $input) { id } }"
UPDATE_PRODUCT = (
    "mutation($id: ID!, $stock: Int!) { updateProduct(id: $id, input: {stock: $stock}) { id } }"
)
LOGS = """query($org: ID!) { logs(organization: $org, first: 50) {
  edges { node { id status rule { name } } } } }"""


def ok(server, member, query, variables=None) -> dict:
    answer = server.graphql(query, variables, token=member.token)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def update(fields, **extra):
    return {"actionType": "UPDATE_RECORD", "parameters": {"fields": fields}, **extra}


def rules_of_every_status(org: str) -> dict[str, dict]:
    """Four rules watching a product's stock, one per final status, by that status. Their
    actions write the description only, so they do not fire each other."""
    described = update({"description": "Seen {{ object.name }}"})
    # A private address behind a placeholder: accepted at save, refused when the run calls it.
    refused_webhook = {
        "actionType": "CALL_WEBHOOK",
        "parameters": {"url": "http://127.0.0.1:9/hook/{{ object.id }}", "body": {"x": 1}},
    }
    common = {
        "organization": org,
        "triggerType": "EVENT",
        "model": "catalog.product",
        "triggerEvent": "UPDATED",
        "watchedFields": ["stock"],
    }
    return {
        "SUCCEEDED": {**common, "name": "succeeds", "actions": [described]},
        "SKIPPED": {
            **common,
            "name": "skips",
            "conditions": {
                "logic": "AND",
                "conditions": [{"field": "status", "operator": "EQUALS", "value": "DRAFT"}],
            },
            "actions": [described],
        },
        "FAILED": {**common, "name": "fails", "actions": [refused_webhook, described]},
        "PARTIAL": {
            **common,
            "name": "partly",
            "actions": [{**refused_webhook, "continueOnFailure": True}, described],
        },
    }


# What one update of the product then counts, by metric and labels.
EXPECTED = {
    ("automation_runs_total", (("status", "SUCCEEDED"), ("trigger", "EVENT"))): 1,
    ("automation_runs_total", (("status", "SKIPPED"), ("trigger", "EVENT"))): 1,
    ("automation_runs_total", (("status", "FAILED"), ("trigger", "EVENT"))): 1,
    ("automation_runs_total", (("status", "PARTIAL"), ("trigger", "EVENT"))): 1,
    ("automation_actions_total", (("action_type", "UPDATE_RECORD"), ("status", "SUCCEEDED"))): 2,
    ("automation_actions_total", (("action_type", "UPDATE_RECORD"), ("status", "FAILED"))): 0,
    ("automation_actions_total", (("action_type", "UPDATE_RECORD"), ("status", "SKIPPED"))): 1,
    ("automation_actions_total", (("action_type", "CALL_WEBHOOK"), ("status", "FAILED"))): 2,
    ("automation_webhook_attempts_total", (("outcome", "refused"),)): 2,
    ("automation_webhook_attempts_total", (("outcome", "success"),)): 0,
    ("automation_run_queue_wait_seconds_count", ()): 4,
    ("automation_run_duration_seconds_count", ()): 4,
}


def lamp(server, member) -> str:
    """A new ACTIVE product of the member's organization, stock 10; its id."""
    product = {"organization": member.organization_id, "name": "Lamp", "status": "ACTIVE"}
    created = ok(server, member, CREATE_PRODUCT, {"input": {**product, "stock": 10}})
    return created["createProduct"]["id"]


def fire_runs_of_every_status(server, member) -> dict[str, str]:
    """Create the rules and a product, update its stock once; {rule name: final status}."""
    org = member.organization_id
    for rule_input in rules_of_every_status(org).values():
        ok(server, member, CREATE_RULE, {"input": rule_input})
    product = lamp(server, member)
    ok(server, member, UPDATE_PRODUCT, {"id": product, "stock": 3})
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while True:
        edges = ok(server, member, LOGS, {"org": org})["logs"]["edges"]
        statuses = {edge["node"]["rule"]["name"]: edge["node"]["status"] for edge in edges}
        if len(statuses) == 4 and set(statuses.values()) <= FINISHED:
            return statuses
        assert time.monotonic() < deadline, f"runs did not finish: {statuses}"
        time.sleep(0.2)


def scrape(url: str, **headers) -> dict:
    answer = httpx.get(url, headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def counted(samples: dict) -> dict:
    return {key: samples.get(key, 0) for key in EXPECTED}


@pytest.mark.embedded_only
def test_an_embedded_servers_metrics_count_runs_of_every_status_and_its_log_is_json(
    start_server,
):
    server = start_server(embedded=True, env={"LOG_FORMAT": "json"})
    member = server.create_member("ops-alice", "ops-acme")

    statuses = fire_runs_of_every_status(server, member)

    assert statuses == {
        "succeeds": "SUCCEEDED",
        "skips": "SKIPPED",
        "fails": "FAILED",
        "partly": "PARTIAL",
    }
    samples = scrape(f"{server.base_url}/metrics")
    assert counted(samples) == EXPECTED
    assert samples[("automation_runs_pending", ())] == 0
    assert samples[("automation_workers_seen", ())] == 1

    assert server.stop() == 0
    records = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    warnings = [record for record in records if record.get("logger") == "automation.runs"]
    assert sorted(record["status"] for record in warnings) == ["FAILED", "PARTIAL"]
    for record in warnings:
        assert record["level"] == "WARNING"
        assert {"run_id", "rule_id", "organization_id", "correlation_id"} <= set(record)
        assert str(record["organization_id"]) == member.organization_id
    failed = next(record for record in warnings if record["status"] == "FAILED")
    assert failed["failed_actions"] == ["actions.0 CALL_WEBHOOK"]
    assert "Refused to call 127.0.0.1:9" in failed["message"]


@contextlib.contextmanager
def worker(env, data_dir, *args: str):
    """A `manage.py run_huey` process on the server's database and queue; stopped at the end
    (SIGINT: Huey's graceful stop) unless the test stopped it."""
    log_path = data_dir / f"run_huey-{time.monotonic_ns()}.log"
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "run_huey", "--workers", "1", *args],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        process.log_path = log_path
        try:
            yield process
        finally:
            stop(process)


def stop(process) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for(what: str, check, timeout: float = 45):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@distributed
def test_a_distributed_workers_metrics_port_counts_its_runs(tmp_path):
    data_dir = tmp_path / "distributed"
    with contextlib.ExitStack() as stack:
        env = stack.enter_context(isolated_environment(data_dir, embedded=False))
        env["LOG_FORMAT"] = "json"
        server = launch(env, data_dir, ["--no-worker"])
        stack.callback(server.stop)
        port = free_port()
        process = stack.enter_context(
            worker(env, data_dir, "--metrics-port", str(port), "--no-periodic")
        )
        url = f"http://127.0.0.1:{port}/metrics"

        def port_answers():
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(url, timeout=2).status_code == 200
            return False

        wait_for("the worker's metrics port", port_answers)
        member = server.create_member("ops-bob", "ops-globex")

        fire_runs_of_every_status(server, member)

        assert counted(scrape(url)) == EXPECTED
        # The server executed none of them: its own counters did not move.
        assert (
            scrape(f"{server.base_url}/metrics").get(
                ("automation_runs_total", (("status", "SUCCEEDED"), ("trigger", "EVENT"))), 0
            )
            == 0
        )
        stop(process)
        lines = [line for line in process.log_path.read_text().splitlines() if line.strip()]
        assert lines and all(isinstance(json.loads(line), dict) for line in lines)


def health(server) -> tuple[int, dict]:
    answer = httpx.get(f"{server.base_url}/healthz", timeout=10)
    return answer.status_code, answer.json()


def test_healthz_turns_503_while_the_only_worker_is_stopped_and_runs_wait(start_server):
    thresholds = {
        "AUTOMATION_HEALTH_WORKER_STALE_SECONDS": "2",
        "AUTOMATION_WORKER_HEARTBEAT_SECONDS": "0.2",
    }
    server = start_server(extra_args=["--no-worker"], env=thresholds)
    member = server.create_member("ops-carol", "ops-initech")
    org = member.organization_id
    ok(server, member, CREATE_RULE, {"input": rules_of_every_status(org)["SUCCEEDED"]})
    product = lamp(server, member)

    with worker(server.env, server.data_dir) as process:
        wait_for("a worker heartbeat", lambda: health(server)[1]["workers"]["seen"] >= 1)
        stop(process)
    ok(server, member, UPDATE_PRODUCT, {"id": product, "stock": 3})  # a run waits, unserved

    status, report = wait_for("503", lambda: (found := health(server))[0] == 503 and found)
    assert report["status"] == "degraded"
    assert report["workers"]["seen"] == 0
    assert report["oldest_pending_run_age_seconds"] > 2
    assert "no worker was seen" in report["problems"][0]

    with worker(server.env, server.data_dir):
        status, report = wait_for("200", lambda: (found := health(server))[0] == 200 and found)
        assert report["status"] == "ok" and report["workers"]["seen"] >= 1
        edges = wait_for(
            "the run to finish",
            lambda: [
                edge
                for edge in ok(server, member, LOGS, {"org": org})["logs"]["edges"]
                if edge["node"]["status"] == "SUCCEEDED"
            ],
        )
        assert len(edges) == 1


@pytest.mark.embedded_only
def test_a_metrics_port_needs_thread_workers(tmp_path):
    with isolated_environment(tmp_path, embedded=True) as env:
        done = subprocess.run(
            [sys.executable, "manage.py", "run_huey", "-k", "process", "--metrics-port", "1"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode != 0
    assert "its workers must be threads" in done.stderr
