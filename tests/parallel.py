"""Storage of its own for each pytest-xdist worker, chosen before Django reads its settings.

Loaded with `-p tests.parallel` (pyproject.toml's addopts): pytest-django loads the settings
while pytest starts, before any conftest, and the settings read the environment once. A worker
(PYTEST_XDIST_WORKER=gw0, gw1, ...) therefore gets, in its environment:

- AUTOMATION_DATA_DIR: `<base>/<worker>` (base: AUTOMATION_DATA_DIR, default var/test): the
  SQLite test database, Huey's SQLite queue and the rule index's version file;
- REDIS_URL (distributed mode): the database number of REDIS_URL plus the worker's index
  (gw0 keeps it, gw1 the next, ...), so counters, queues and the rule version of one worker never
  meet another's; the live-event prefix follows it (config/settings.py derives it from the
  number, CHANNEL_LAYER_PREFIX when set gets the worker's name);
- HUEY_NAME: the queue's name with the worker's name.

PostgreSQL: pytest-django names each worker's test database `test_<name>_<worker>` itself.
Processes the tests start (`serve`, workers, schedulers) inherit this environment. Without xdist
(`-n 0`) nothing changes.
"""

import os
import re
from urllib.parse import urlsplit, urlunsplit

import pytest

DEFAULT_DATA_DIR = "var/test"
# Benchmarks' Redis databases: tests/bench (7) and `python -m bench` (8) may run beside the suite.
BENCH_REDIS_DATABASES = {7, 8}


def worker_index(worker: str) -> int:
    """gw3 -> 3."""
    match = re.fullmatch(r"gw(\d+)", worker)
    if not match:
        raise pytest.UsageError(f"unexpected PYTEST_XDIST_WORKER {worker!r}")
    return int(match.group(1))


def redis_url_for(url: str, index: int) -> str:
    """REDIS_URL with the worker's database number: REDIS_URL's own plus `index`."""
    parts = urlsplit(url)
    base = int(parts.path.strip("/") or 0)
    number = base + index
    if number in BENCH_REDIS_DATABASES:
        raise pytest.UsageError(
            f"worker gw{index} would use Redis database {number}, which the benchmarks use: "
            f"give REDIS_URL a database number such that {base}..{base}+workers-1 avoids 7 and 8"
        )
    return urlunsplit(parts._replace(path=f"/{number}"))


def worker_environment(environ, worker: str) -> dict[str, str]:
    """The variables a worker sets (see the module docstring)."""
    index = worker_index(worker)
    base = environ.get("AUTOMATION_DATA_DIR") or DEFAULT_DATA_DIR
    changes = {"AUTOMATION_DATA_DIR": os.path.join(base, worker)}
    if environ.get("REDIS_URL"):
        changes["REDIS_URL"] = redis_url_for(environ["REDIS_URL"], index)
        changes["HUEY_NAME"] = f"{environ.get('HUEY_NAME') or 'automation'}-{worker}"
        if environ.get("CHANNEL_LAYER_PREFIX"):
            changes["CHANNEL_LAYER_PREFIX"] = f"{environ['CHANNEL_LAYER_PREFIX']}.{worker}"
    return changes


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    """Before pytest-django's hook of the same name, which loads the settings."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        os.environ.update(worker_environment(os.environ, worker))
