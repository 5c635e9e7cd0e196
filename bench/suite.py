"""The benchmarks of one mode, in a process of their own: `python -m bench.suite --mode M ...`.

Django reads its settings from the environment once per process, so each mode (embedded, redis)
runs in a child of `bench/run.py`. This module sets the mode's environment, starts from empty
storage, migrates, runs the selected benchmarks and writes their rows as JSON.
"""

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback
from dataclasses import dataclass

from bench import env as bench_env

BENCHMARKS = {
    1: "bench.b1_unwatched_save",
    2: "bench.b2_rule_run",
    3: "bench.b3_rule_listing",
    4: "bench.b4_scheduler_tick",
    5: "bench.b5_live_latency",
    6: "bench.b6_subscribers",
    7: "bench.b7_throughput",
    8: "bench.b8_fairness",
    9: "bench.b9_log_scale",
    10: "bench.b10_webhook_latency",
    11: "bench.b11_webhook_throughput",
}
# Benchmarks that only mean something on Redis + PostgreSQL.
REDIS_ONLY = {7, 11}
QUICK, DEFAULT, TINY = "quick", "default", "tiny"


@dataclass
class Context:
    """What a benchmark needs to know about the run: mode, size, environment for subprocesses."""

    mode: str
    level: str = DEFAULT
    env: dict | None = None

    def size(self, default, quick, tiny=None):
        """The size for this run's level (tiny: the correctness test's smallest size)."""
        if self.level == TINY:
            return tiny if tiny is not None else quick
        return quick if self.level == QUICK else default

    @property
    def quick(self) -> bool:
        return self.level != DEFAULT


def machine() -> dict:
    from django.conf import settings
    from django.db import connection
    from huey.contrib.djhuey import HUEY

    with connection.cursor():
        pass
    version = connection.Database.sqlite_version if connection.vendor == "sqlite" else None
    if connection.vendor == "postgresql":
        number = connection.pg_version
        version = f"{number // 10000}.{number % 10000}"
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "database": f"{connection.vendor} {version}",
        "broker": type(HUEY).__name__,
        "channel_layer": settings.CHANNEL_LAYERS["default"]["BACKEND"].rsplit(".", 1)[-1],
    }


def setup(mode: str) -> dict:
    """Environment, empty storage, Django, migrations. Returns the environment."""
    environment = bench_env.environment(mode)
    for name in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(name, None)
    os.environ.update(environment)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    bench_env.reset_storage(mode, environment)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    if mode == bench_env.REDIS:
        from django.core.cache import cache

        cache.clear()  # Redis database 8 is the bench's own
    import automation.tasks  # noqa: F401
    import bench.tasks  # noqa: F401

    return environment


def run_benchmarks(context: Context, numbers) -> list[dict]:
    rows = []
    for number in numbers:
        if number in REDIS_ONLY and context.mode != bench_env.REDIS:
            continue
        started = time.monotonic()
        print(f"  [{context.mode}] benchmark {number} ...", file=sys.stderr, flush=True)
        try:
            module = importlib.import_module(BENCHMARKS[number])
            produced = module.run(context)
        except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the others
            traceback.print_exc()
            produced = [_error_row(number, exc)]
        for row in produced:
            row.mode = context.mode
            rows.append(row.as_dict())
        print(
            f"  [{context.mode}] benchmark {number} done in {time.monotonic() - started:.1f}s",
            file=sys.stderr,
            flush=True,
        )
    return rows


def _error_row(number, exc):
    from bench.stats import Row

    return Row(
        bench=number,
        name="benchmark failed",
        value=0,
        unit="",
        ok=False,
        detail=f"{type(exc).__name__}: {exc}"[:200],
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.suite")
    parser.add_argument("--mode", choices=bench_env.MODES, required=True)
    parser.add_argument("--level", choices=(DEFAULT, QUICK, TINY), default=DEFAULT)
    parser.add_argument("--only", type=int, action="append", choices=sorted(BENCHMARKS))
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    environment = setup(args.mode)
    context = Context(mode=args.mode, level=args.level, env=environment)
    rows = run_benchmarks(context, args.only or sorted(BENCHMARKS))
    with open(args.out, "w") as handle:
        json.dump({"mode": args.mode, "machine": machine(), "rows": rows}, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
