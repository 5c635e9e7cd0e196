"""2. One rule run through the real queue, against a hand-written Huey task doing the same update.

The rule: product UPDATED, 1 condition (status = ACTIVE), 1 UPDATE_RECORD action. Its runs go
through everything the engine does for a run: claim, condition trace, every state change written
with its guarded UPDATE and published to the channel layer. The baseline task checks the same
condition and makes the same update by hand (select_for_update + save, as the action does).

Both are measured the same way: N items committed to the queue at once, one consumer worker
thread (the consumer `serve` runs), time from the enqueue until the last one is done, per item.
Back-to-back items keep the worker busy, so the figure is the processing cost of a run, not the
queue's idle polling interval. The PENDING logs are written before the clock starts (that write
belongs to the triggering save, benchmark 1).
"""

import time

from django.db import transaction

from automation.core.choices import RunStatus
from automation.core.models import AutomationLog
from bench import data
from bench.consumer import running_consumer
from bench.stats import Row, median, wait_until

FINISHED = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.PARTIAL, RunStatus.SKIPPED)


def _engine_batch(rule, items) -> float:
    started = None
    with transaction.atomic():
        logs = data.stock_runs(rule, items)
        started = time.perf_counter()  # the commit enqueues them (on_commit)
    ids = [log.pk for log in logs]
    done = AutomationLog.objects.filter(pk__in=ids, status__in=FINISHED)
    wait_until(lambda: done.count() == len(ids), timeout=300, interval=0.01, what="engine runs")
    elapsed = time.perf_counter() - started
    failed = AutomationLog.objects.filter(pk__in=ids).exclude(status=RunStatus.SUCCEEDED).count()
    if failed:
        raise RuntimeError(f"{failed} benchmark runs did not succeed")
    return elapsed / len(ids)


def _baseline_batch(items, marker: str) -> float:
    from bench.tasks import update_product_by_hand
    from catalog.models import Product

    started = time.perf_counter()
    for product in items:
        update_product_by_hand(product.pk, marker)
    done = Product.objects.filter(pk__in=[p.pk for p in items], description=marker)
    wait_until(lambda: done.count() == len(items), timeout=300, interval=0.01, what="tasks")
    return (time.perf_counter() - started) / len(items)


def run(ctx) -> list[Row]:
    rounds, batch = ctx.size((5, 60), (3, 30), (1, 3))
    org = data.organization("b2")
    rule = data.event_rule(org)
    rule.refresh_from_db()
    items = data.products(org, batch)
    engine_times, baseline_times = [], []
    with running_consumer(workers=1):
        _baseline_batch(items[:2], "warm-up")
        _engine_batch(rule, items[:2])
        for index in range(rounds):
            engine_times.append(_engine_batch(rule, items))
            baseline_times.append(_baseline_batch(items, f"by hand {index}"))
    engine, baseline = median(engine_times), median(baseline_times)
    ratio = engine / baseline
    return [
        Row(
            bench=2,
            name="rule run (1 condition, 1 update) vs hand-written task",
            value=round(ratio, 3),
            unit="x",
            goal="<= 3x",
            ok=ratio <= 3,
            detail=(
                f"{engine * 1000:.2f} ms vs {baseline * 1000:.2f} ms per item "
                f"(1 worker thread, median of {rounds} batches x {batch})"
            ),
        )
    ]
