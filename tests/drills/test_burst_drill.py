"""Drill: a burst of triggering writes through killed workers and a Redis restart loses nothing.

Runs bench/drills/burst.py (its docstring explains the rules and checks) at the suite's size:
300 writes, one SIGKILL of a worker and one Redis restart; `DRILLS=full` runs 10,000 writes and
two kills, as the command in docs/drills.md does. The drill brings its own redis-server (a free
port, so restarting it disturbs nobody) and its own database on the PostgreSQL server DATABASE_URL
names.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from tests.drills.conftest import needs_postgres, size

pytestmark = [
    pytest.mark.slow,
    needs_postgres,
    pytest.mark.skipif(not shutil.which("redis-server"), reason="the drill starts redis-server"),
]


def test_a_burst_through_worker_kills_and_a_redis_restart_runs_every_write_once(tmp_path):
    writes, kills = size("burst_writes"), size("burst_kills")
    figures = tmp_path / "burst.json"
    result = subprocess.run(
        [
            sys.executable,
            "bench/drills/burst.py",
            f"--writes={writes}",
            f"--kills={kills}",
            "--redis-restarts=1",
            f"--json={figures}",
        ],
        cwd=Path(settings.BASE_DIR),
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert figures.exists(), result.stderr[-4000:]
    report = json.loads(figures.read_text())
    assert report["problems"] == [], report["problems"][:20]
    assert result.returncode == 0, result.stderr[-4000:]
    assert report["failed_writes"] == 0
    assert report["products"] == report["burst_runs"] == report["audit_runs"] == writes
    assert report["categories"] == writes, "the CREATE action ran once per write"
    assert report["statuses"] == {"SUCCEEDED": 2 * writes}
    assert [event["what"] for event in report["chaos"]].count("restart redis") == 1
    assert sum(event["what"].startswith("SIGKILL") for event in report["chaos"]) == kills
    print(
        f"\nburst: {writes} writes in {report['write_seconds']}s, all {2 * writes} runs finished "
        f"after {report['all_runs_finished_seconds']}s; chaos {report['chaos']}; "
        f"sweeper {report['sweeper']}"
    )
