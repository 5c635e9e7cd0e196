"""`manage.py serve` as a user runs it: a real process, real HTTP requests, real signals."""

import re
import signal
import time

import httpx
import pytest
from huey.storage import SqliteStorage

from tests.e2e.conftest import json_of


def test_healthz_reports_database_broker_and_queue(e2e_server):
    # The consumer's scheduler queues its periodic tasks as it starts; the in-process workers
    # take them a moment later (longer on a loaded machine), so wait for an empty queue.
    deadline = time.monotonic() + 60
    while True:
        response = httpx.get(f"{e2e_server.base_url}/healthz", timeout=10)
        report = response.json()
        if report["broker"].get("queue_depth") == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)

    assert response.status_code == 200
    assert report["status"] == "ok"
    assert report["database"]["ok"] is True
    assert report["broker"]["ok"] is True
    assert report["broker"]["queue_depth"] == 0
    assert report["oldest_pending_run_age_seconds"] is None
    assert report["most_overdue_waiting_run_seconds"] is None


def test_me_answers_the_token_owner_over_http(e2e_server):
    member = e2e_server.create_member("serve-me", "serve-me-org")

    response = e2e_server.graphql("{ me { id } }", token=member.token)

    assert response.status_code == 200
    body = json_of(response)
    assert "errors" not in body
    assert body["data"]["me"]["id"] == member.user_id


def test_a_bad_token_is_refused(e2e_server):
    body = json_of(e2e_server.graphql("{ me { id } }", token="are_not-a-real-token"))

    assert body["data"] == {"me": None}
    assert [error["extensions"]["code"] for error in body["errors"]] == ["UNAUTHENTICATED"]


def test_create_token_prints_a_working_token(e2e_server):
    e2e_server.create_member("serve-cli", "serve-cli-org")

    token = e2e_server.manage("create_token", "serve-cli", "--name", "laptop").stdout.strip()

    body = json_of(e2e_server.graphql("{ me { username } }", token=token))
    assert body["data"]["me"]["username"] == "serve-cli"


def test_admin_and_its_static_files_are_served(e2e_server):
    login = httpx.get(f"{e2e_server.base_url}/admin/login/", timeout=10)
    css = httpx.get(f"{e2e_server.base_url}/static/admin/css/base.css", timeout=10)

    assert login.status_code == 200
    assert "csrfmiddlewaretoken" in login.text
    assert css.status_code == 200
    assert "text/css" in css.headers["content-type"]


def test_sigint_stops_server_and_consumer_cleanly(start_server):
    server = start_server()

    code = server.stop(signal.SIGINT)

    assert code == 0, server.log()
    log = server.log()
    assert "Huey consumer running in-process" in log
    # The start-up heap is frozen: full collections no longer walk it (100-200 ms stalls).
    assert re.search(r"\d{5,} start-up objects kept out of garbage collection", log)
    assert "Stopping the Huey consumer" in log
    assert "Traceback" not in log


def test_sigterm_stops_server_cleanly(start_server):
    server = start_server()

    code = server.stop(signal.SIGTERM)

    assert code == 0, server.log()
    assert "Stopped." in server.log()


def test_no_worker_serves_without_a_consumer(start_server):
    server = start_server(extra_args=["--no-worker"])

    assert httpx.get(f"{server.base_url}/healthz", timeout=10).status_code == 200
    assert server.stop() == 0
    assert "Huey consumer running in-process" not in server.log()


@pytest.mark.embedded_only
def test_idle_embedded_consumer_keeps_taking_queued_messages(start_server):
    """After idle pauses the in-process workers still take what is queued.

    How quickly (the 100 ms goal) is a figure of the benchmarks (bench/), not of this test; the
    polling settings behind it are checked in tests/unit/test_settings.py. Raw messages go
    straight into the server's queue (the server cannot import test code); the worker logs that
    it cannot decode them and still takes them off the queue.
    """
    server = start_server(embedded=True)
    queue = SqliteStorage(name="automation", filename=str(server.data_dir / "huey.sqlite3"))
    for _ in range(2):
        time.sleep(1)
        queue.enqueue(b"probe")
        deadline = time.monotonic() + 30  # taken at once; generous for a busy machine
        while queue.queue_size() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert queue.queue_size() == 0


@pytest.mark.embedded_only
def test_a_busy_port_fails_with_an_error(start_server):
    first = start_server(embedded=True)
    port = first.base_url.rsplit(":", 1)[1]
    second = first.manage("serve", "--port", port, "--skip-migrate", check=False)

    assert second.returncode != 0
    assert first.is_running()
