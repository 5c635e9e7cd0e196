"""The benchmarks' server is ready once it answers with its database and broker up: runs an
earlier benchmark left PENDING make /healthz 503 while no worker was seen, which a
`serve --no-worker` shows until the workers started after it are up (bench/server.py)."""

import httpx

from bench.server import _ready


def healthz(status: int, database=True, broker=True, problems=()) -> httpx.Response:
    report = {"database": {"ok": database}, "broker": {"ok": broker}, "problems": list(problems)}
    return httpx.Response(status, json=report)


def test_a_server_whose_only_problem_is_waiting_work_is_ready():
    assert _ready(healthz(200))
    assert _ready(healthz(503, problems=["runs have waited 84 s and no worker was seen"]))


def test_a_server_whose_database_or_broker_does_not_answer_is_not_ready():
    assert not _ready(healthz(503, database=False, problems=["the database does not answer"]))
    assert not _ready(healthz(503, broker=False, problems=["the broker does not answer"]))
    assert not _ready(httpx.Response(502, json={}))
