"""Reliability drills: short versions run with the suite; `DRILLS=full` runs the full sizes.

The sizes live here so the full command (docs/drills.md) and CI's short run use the same tests:
`DRILLS=full .venv/bin/pytest tests/drills -s`.
Drills that need PostgreSQL and Redis run when DATABASE_URL / REDIS_URL are set (CI's distributed
pass) and are skipped otherwise, like tests/integration/test_redis_worker.py.
"""

import os
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.api.conftest import client, gql  # noqa: F401 - the API tests' fixtures, for drills

FULL = os.environ.get("DRILLS", "").lower() == "full"

# (short, full) sizes of each drill.
SIZES = {
    "burst_writes": (300, 10_000),
    "burst_kills": (1, 2),
    "fuzz_cases": (100, 1_000),
    "scheduled_rules": (60, 400),
    "stream_runs": (300, 1_000),
    "backup_writes": (150, 2_000),
}


def size(name: str) -> int:
    """The drill size for this run: an env override DRILL_<NAME>, else short or full."""
    override = os.environ.get(f"DRILL_{name.upper()}")
    if override:
        return int(override)
    short, full = SIZES[name]
    return full if FULL else short


def uses_postgres() -> bool:
    return urlsplit(os.environ.get("DATABASE_URL", "")).scheme.startswith("postgres")


needs_postgres = pytest.mark.skipif(
    not uses_postgres(),
    reason="this drill needs PostgreSQL (DATABASE_URL), as CI's distributed pass",
)


def test_database_url(connection) -> str:
    """DATABASE_URL pointing at the test database pytest-django created (for subprocesses)."""
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path="/" + connection.settings_dict["NAME"]))


test_database_url.__test__ = False  # a helper, not a test
