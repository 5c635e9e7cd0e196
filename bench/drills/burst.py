"""Reliability drill: a burst of triggering writes while workers are killed and Redis restarts.

    .venv/bin/python bench/drills/burst.py [--writes 10000] [--kills 2] [--redis-restarts 1]

What it sets up (all of it its own, removed at the end):
- a redis-server on a free port (restarting it disturbs no one else on the machine);
- a fresh PostgreSQL database beside DATABASE_URL (default postgres://postgres@127.0.0.1:5432/
  postgres), migrated;
- two `manage.py run_huey` worker processes (2 threads each, no periodic tasks: this process runs
  the sweeper, every second, with thresholds lowered through the environment).

Two rules make any double application visible. Rule "burst" fires on every product CREATED and
runs CREATE_RECORD (a category named after the product: a second application would make a
second category) then UPDATE_RECORD (sets the description from the snapshot). Rule "audit" fires
on every product UPDATED, so it gets exactly one run per application of that UPDATE.

During the burst the chaos thread kills a worker with SIGKILL (restarting it a second later)
`--kills` times and restarts Redis (`shutdown nosave`: the queue is lost) `--redis-restarts`
times. Afterwards, for every product written: exactly one finished "burst" run, SUCCEEDED; exactly
one "audit" run; exactly one category; the description set. Prints the figures (and writes them
as JSON with --json); exits 1 when any check fails.
"""

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- Services of the drill's own ----------------------------------------------------------------


class RedisServer:
    """A private redis-server (no persistence): `restart()` loses everything, like a crash."""

    def __init__(self, directory: Path):
        self.port = free_port()
        self.directory = directory
        self.process = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._cli("ping").stdout.strip() == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self._cli("shutdown", "nosave")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def restart(self, down_seconds: float) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def _cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["redis-cli", "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=10,
        )


def _database_url(base: str, name: str) -> str:
    return urlunsplit(urlsplit(base)._replace(path=f"/{name}"))


def _admin_connection(base: str):
    """A connection to the server's maintenance database (DATABASE_URL's may not exist yet)."""
    import psycopg

    return psycopg.connect(_database_url(base, "postgres"), autocommit=True)


@contextlib.contextmanager
def private_database(base_url: str):
    name = f"h_drill_burst_{uuid.uuid4().hex[:10]}"
    with _admin_connection(base_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _database_url(base_url, name)
    finally:
        from django.db import connections

        connections.close_all()
        with _admin_connection(base_url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Worker:
    """One `manage.py run_huey` process; `kill()` is SIGKILL, `start()` a fresh process."""

    def __init__(self, number: int, env: dict, log_dir: Path):
        self.number = number
        self.env = env
        self.log_path = log_dir / f"worker-{number}.log"
        self.process = None

    def start(self) -> None:
        with self.log_path.open("a") as sink:
            self.process = subprocess.Popen(
                [PYTHON, "manage.py", "run_huey", "--workers", "2", "--no-periodic"],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# --- The drill ---------------------------------------------------------------------------------


def make_rules():
    from django.contrib.auth import get_user_model

    from accounts.choices import Role
    from accounts.models import Membership, Organization
    from automation.core.choices import ActionType, TriggerEvent
    from tests.factories import AutomationRuleFactory

    organization = Organization.objects.create(slug="drill", name="Drill")
    user = get_user_model().objects.create_user("drill-admin")
    Membership.objects.create(user=user, organization=organization, role=Role.ADMIN)
    burst = AutomationRuleFactory(
        organization=organization,
        name="burst",
        trigger_event=TriggerEvent.CREATED,
        actions=[
            {
                "action_type": ActionType.CREATE_RECORD,
                "parameters": {
                    "model": "catalog.category",
                    "fields": {"name": "made for {{ object.id }}"},
                },
            },
            {
                "action_type": ActionType.UPDATE_RECORD,
                "parameters": {"fields": {"description": "touched {{ object.name }}"}},
            },
        ],
    )
    audit = AutomationRuleFactory(
        organization=organization, name="audit", trigger_event=TriggerEvent.UPDATED
    )
    return organization, burst, audit


def write_burst(organization, count: int, progress: list, errors: list) -> None:
    """`count` product creations, each with its run log in one transaction (the outbox)."""
    from django.db import transaction

    from catalog.models import Product

    for number in range(count):
        try:
            with transaction.atomic():
                Product.objects.create(organization=organization, name=f"p{number}", stock=1)
        except Exception as exc:  # a write the server refused: counted, reported, fails the drill
            errors.append(f"{type(exc).__name__}: {exc}")
        progress[0] = number + 1


def chaos(plan: list, progress: list, workers: list, redis: RedisServer, events: list) -> None:
    """Start each (at_write, action) of `plan` once the writer has reached `at_write`.

    Each action runs in a thread of its own, so one that takes a while (a killed worker is
    restarted a second later) does not push the next one past the end of a short burst.
    """

    def act(action) -> None:
        at_write, started = progress[0], time.monotonic()
        if action == "redis":
            redis.restart(down_seconds=1.0)
            what = "restart redis"
        else:
            workers[action].kill()
            time.sleep(1.0)
            workers[action].start()
            what = f"SIGKILL worker {action}"
        seconds = round(time.monotonic() - started, 2)
        events.append({"at_write": at_write, "what": what, "seconds": seconds})

    threads = []
    for at_write, action in plan:
        while progress[0] < at_write:
            time.sleep(0.005)
        threads.append(threading.Thread(target=act, args=(action,)))
        threads[-1].start()
    for thread in threads:
        thread.join()


def sweeper(stop: threading.Event, totals: dict, period: float) -> None:
    """The periodic sweeper, called every `period` seconds instead of every minute."""
    from django.db import close_old_connections

    from automation.runs import sweeper

    while not stop.wait(period):
        try:
            found = sweeper.sweep()
        except Exception as exc:  # Redis down mid-sweep: the next call tries again
            totals["sweep_errors"] += 1
            totals["last_sweep_error"] = f"{type(exc).__name__}: {exc}"
            close_old_connections()
            continue
        totals["revived"] += found["revived"]
        totals["requeued"] += found["requeued"]


def unfinished_count(rule_ids) -> int:
    from automation.core.choices import RunStatus
    from automation.core.models import AutomationLog

    return AutomationLog.objects.filter(
        rule_id__in=rule_ids, status__in=[RunStatus.PENDING, RunStatus.RUNNING]
    ).count()


def verify(organization, burst, audit, written: int) -> dict:
    """Every product: one finished burst run (SUCCEEDED), one audit run, one category."""
    from django.db.models import Count, Q

    from automation.core.choices import RunStatus
    from automation.core.models import AutomationLog
    from catalog.models import Category, Product

    products = Product.objects.filter(organization=organization)
    product_ids = {str(pk) for pk in products.values_list("pk", flat=True)}

    def runs_per_product(rule):
        rows = (
            AutomationLog.objects.filter(rule=rule)
            .values("object_id")
            .annotate(total=Count("id"), finished=Count("id", filter=~Q(status__in=["PENDING", "RUNNING"])))
        )  # fmt: skip
        return {row["object_id"]: (row["total"], row["finished"]) for row in rows}

    burst_runs = runs_per_product(burst)
    audit_runs = runs_per_product(audit)
    names = Counter_of(
        Category.objects.filter(organization=organization).values_list("name", flat=True)
    )
    statuses = dict(
        AutomationLog.objects.filter(rule__in=[burst, audit])
        .values_list("status")
        .annotate(n=Count("id"))
    )
    problems = []
    for pk in sorted(product_ids, key=int):
        if burst_runs.get(pk) != (1, 1):
            problems.append(f"product {pk}: burst runs (total, finished) = {burst_runs.get(pk)}")
        if audit_runs.get(pk, (0, 0))[0] != 1:
            problems.append(
                f"product {pk}: {audit_runs.get(pk, (0, 0))[0]} audit runs (UPDATE applications)"
            )
        if names.get(f"made for {pk}", 0) != 1:
            problems.append(f"product {pk}: {names.get(f'made for {pk}', 0)} categories")
    not_succeeded = AutomationLog.objects.filter(rule=burst).exclude(status=RunStatus.SUCCEEDED)
    for log in not_succeeded[:20]:
        problems.append(f"burst run {log.pk} is {log.status}: {log.error}")
    untouched = products.exclude(description__startswith="touched ").count()
    if untouched:
        problems.append(f"{untouched} products without the UPDATE's description")
    if len(product_ids) != written:
        problems.append(f"{len(product_ids)} products in the database, {written} writes committed")
    return {
        "products": len(product_ids),
        "burst_runs": sum(total for total, _ in burst_runs.values()),
        "audit_runs": sum(total for total, _ in audit_runs.values()),
        "categories": sum(names.values()),
        "statuses": statuses,
        "resumed_runs": AutomationLog.objects.filter(rule=burst, seq__gt=9).count(),
        "problems": problems,
    }


def Counter_of(values) -> dict:  # noqa: N802 - reads like the collections.Counter it wraps
    from collections import Counter

    return dict(Counter(values))


def run(args) -> dict:
    base_url = args.database_url or os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    work = Path(tempfile.mkdtemp(prefix="drill-burst-"))
    redis = RedisServer(work)
    redis.start()
    workers: list[Worker] = []
    try:
        with private_database(base_url) as database_url:
            env = {
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "config.settings",
                "DATABASE_URL": database_url,
                "REDIS_URL": redis.url,
                "HUEY_NAME": "drill",
                "AUTOMATION_DATA_DIR": str(work / "data"),
                "AUTOMATION_SWEEP_PENDING_AFTER_SECONDS": str(args.pending_after),
                "AUTOMATION_HEARTBEAT_STALE_SECONDS": str(args.stale_after),
                "LOG_LEVEL": "WARNING",
                "PYTHONUNBUFFERED": "1",
            }
            subprocess.run(
                [PYTHON, "manage.py", "migrate", "--no-input", "-v", "0"],
                cwd=REPO_ROOT, env=env, check=True,
            )  # fmt: skip
            os.environ.update(env)
            sys.path.insert(0, str(REPO_ROOT))
            import django

            django.setup()
            import logging

            logging.getLogger("automation").setLevel(logging.CRITICAL)  # expected outage noise
            organization, burst, audit = make_rules()
            workers = [Worker(number, env, work) for number in range(2)]
            for worker in workers:
                worker.start()

            plan = _chaos_plan(args.writes, args.kills, args.redis_restarts)
            progress, errors, events = [0], [], []
            totals = {"revived": 0, "requeued": 0, "sweep_errors": 0}
            stop = threading.Event()
            threads = [
                threading.Thread(target=sweeper, args=(stop, totals, args.sweep_every)),
                threading.Thread(target=chaos, args=(plan, progress, workers, redis, events)),
            ]
            for thread in threads:
                thread.start()
            started = time.monotonic()
            write_burst(organization, args.writes, progress, errors)
            write_seconds = time.monotonic() - started
            threads[1].join()
            deadline = time.monotonic() + args.timeout
            while unfinished_count([burst.pk, audit.pk]) and time.monotonic() < deadline:
                time.sleep(0.5)
            drain_seconds = time.monotonic() - started
            stop.set()
            threads[0].join()
            result = verify(organization, burst, audit, args.writes - len(errors))
            if errors:
                result["problems"][:0] = [f"{len(errors)} writes failed, e.g. {errors[0]}"]
            left = unfinished_count([burst.pk, audit.pk])
            if left:
                result["problems"].insert(0, f"{left} runs still unfinished after {args.timeout}s")
            result.update(
                writes=args.writes,
                failed_writes=len(errors),
                write_seconds=round(write_seconds, 1),
                writes_per_second=round(args.writes / write_seconds, 1),
                all_runs_finished_seconds=round(drain_seconds, 1),
                runs_per_second=round((result["burst_runs"] + result["audit_runs"]) / drain_seconds, 1),
                chaos=events,
                sweeper=totals,
                ok=not result["problems"],
            )  # fmt: skip
            return result
    finally:
        for worker in workers:
            worker.stop()
        redis.stop()


def _chaos_plan(writes: int, kills: int, redis_restarts: int) -> list:
    """Kills and Redis restarts spread over the burst (first event at 20 % of the writes)."""
    actions = [number % 2 for number in range(kills)] + ["redis"] * redis_restarts
    # Interleave: kill, redis, kill... so the restart lands between the kills.
    ordered = []
    while actions:
        ordered.append(actions.pop(0))
        if "redis" in actions and ordered[-1] != "redis":
            ordered.append(actions.pop(actions.index("redis")))
    step = 0.6 / max(len(ordered), 1)
    return [(int(writes * (0.2 + step * index)), action) for index, action in enumerate(ordered)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=10_000)
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--redis-restarts", type=int, default=1)
    parser.add_argument("--database-url", help="PostgreSQL server to create the drill database on")
    parser.add_argument("--pending-after", type=int, default=5, help="sweeper: re-enqueue after")
    parser.add_argument("--stale-after", type=int, default=5, help="sweeper: heartbeat stale after")
    parser.add_argument("--sweep-every", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for the runs")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
