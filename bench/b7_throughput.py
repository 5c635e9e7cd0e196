"""7. Throughput on Redis + PostgreSQL: rule runs per second with 1 and 2 workers, against a
hand-written Huey task doing the same update with the same workers (goal with 2 workers: at
least half its rate), and against raw no-op Huey tasks per second on the same machine.

A "worker" is a worker process (`python -m bench.worker`, one thread: what `run_huey -w 1` is),
so two of them use both cores. The work is queued first, then the workers start; the rate is
measured between 10 % and 90 % of the items finished, which leaves out start-up and the tail
(from the workers' start when that window is shorter than 0.1 s: tiny sizes). A worker executes
up to AUTOMATION_RUN_BATCH_SIZE (50) queued runs in one transaction, so the number of runs is
many times that, or the window would see a handful of commits.
Raw tasks each do one Redis INCR so they can be counted; rule runs are the benchmark rule on
distinct products (no lock contention between workers), counted in the database, and so are the
hand-written tasks (bench/tasks.py: check the condition, update the description; counted by the
descriptions they wrote).
"""

import time

from django.db import transaction
from huey.contrib.djhuey import HUEY

from automation.core.choices import RunStatus
from automation.core.models import AutomationLog
from bench import data
from bench.stats import Row
from bench.worker import start_workers, stop_workers

FINISHED = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.PARTIAL, RunStatus.SKIPPED)


def measure_rate(env, workers: int, total: int, progress, timeout: float = 600) -> float:
    """Items per second between 10 % and 90 % finished; `progress()` counts finished items."""
    low, high = max(1, total // 10), max(2, total * 9 // 10)
    processes = start_workers(env, workers)
    started = time.perf_counter()
    try:
        deadline = time.monotonic() + timeout
        t_low = t_high = None
        while t_high is None:
            done = progress()
            now = time.perf_counter()
            if t_low is None and done >= low:
                t_low, at_low = now, done
            if done >= high:
                t_high, at_high = now, done
            if time.monotonic() > deadline:
                raise TimeoutError(f"{done} of {total} finished")
            if any(p.poll() is not None for p in processes):
                raise RuntimeError("a worker process exited")
            time.sleep(0.02)
    finally:
        stop_workers(processes)
    if t_high - t_low < 0.1:
        # Too few items to see a window between two polls (tiny sizes): count from the start.
        return at_high / (t_high - started)
    return (at_high - at_low) / (t_high - t_low)


def _raw(env, workers: int, total: int) -> float:
    from bench.tasks import count_done

    HUEY.flush()
    key = f"bench:done:{time.time_ns()}"
    for _ in range(total):
        count_done(key)
    return measure_rate(env, workers, total, lambda: int(HUEY.storage.conn.get(key) or 0))


def _runs(env, rule, items, workers: int) -> float:
    HUEY.flush()
    with transaction.atomic():
        ids = [log.pk for log in data.stock_runs(rule, items)]
    done = AutomationLog.objects.filter(pk__in=ids, status__in=FINISHED)
    rate = measure_rate(env, workers, len(ids), done.count)
    failed = AutomationLog.objects.filter(pk__in=ids, status__in=FINISHED).exclude(
        status=RunStatus.SUCCEEDED
    )
    if failed.exists():
        raise RuntimeError(f"{failed.count()} runs did not succeed")
    return rate


def _by_hand(env, items, workers: int) -> float:
    from bench.tasks import update_product_by_hand
    from catalog.models import Product

    HUEY.flush()
    marker = f"by hand {time.time_ns()}"
    for product in items:
        update_product_by_hand(product.pk, marker)
    done = Product.objects.filter(pk__in=[p.pk for p in items], description=marker)
    return measure_rate(env, workers, len(items), done.count)


# Rule runs/s with 2 workers against the hand-written task's rate with the same workers.
GOAL_VS_BY_HAND = 0.5


def run(ctx) -> list[Row]:
    raw_total, run_total = ctx.size((1500, 2000), (400, 600), (20, 6))
    org = data.organization("b7")
    rule = data.event_rule(org)
    rule.refresh_from_db()
    items = data.products(org, run_total)
    rows = []
    for workers in (1, 2):
        raw = _raw(ctx.env, workers, raw_total)
        by_hand = _by_hand(ctx.env, items, workers)
        runs = _runs(ctx.env, rule, items, workers)
        rates = f"{runs:.1f} runs/s, {by_hand:.1f} hand-written tasks/s, {raw:.0f} no-op tasks/s"
        judged = workers == 2
        rows.append(
            Row(
                bench=7,
                name=f"throughput, {workers} worker(s): rule runs/s vs hand-written update tasks/s",
                value=round(runs / by_hand, 3),
                unit="x",
                goal=f">= {GOAL_VS_BY_HAND}x" if judged else "",
                ok=(runs / by_hand >= GOAL_VS_BY_HAND) if judged else None,
                detail=rates,
            )
        )
        rows.append(
            Row(
                bench=7,
                name=f"throughput, {workers} worker(s): rule runs/s vs raw no-op tasks/s",
                value=round(runs / raw, 3),
                unit="x",
                detail=rates,
            )
        )
    HUEY.flush()
    return rows
