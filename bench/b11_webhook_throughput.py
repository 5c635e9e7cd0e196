"""11. Webhook throughput on Redis + PostgreSQL (issue 22): webhook runs per second with 2 worker
processes against a hand-written Huey task doing the same POST to the same receiver, and a
burst of writes from 8 clients with each write's webhook delivery time.

- **Throughput**, as benchmark 7: the runs (the benchmark 10 rule's, without a secret: one
  CALL_WEBHOOK posting a product's id and stock to a local receiver) are queued first, then 2
  worker processes (`python -m bench.worker`, one thread each) start, and the rate is measured
  between 10 % and 90 % of the runs finished (counted in the database); then the same number of
  hand-written tasks (`bench.tasks.post_by_hand`: one httpx client per process, its connection
  kept, the same body to the same receiver; counted at the receiver) on the same workers. Goal:
  at least 0.5x the hand-written rate (as goal 7 for database actions).
- **The burst**: `serve --no-worker` beside 2 worker processes (the README's distributed
  deployment); 8 clients send `updateProduct` mutations as fast as they are answered, each write
  a product's stock (distinct products), which fires the rule. Printed: the writes' rate, the
  webhooks' rate (first write to last webhook), write -> webhook received p50 and p99 (from
  sending the write), and the deliveries lost (a write whose webhook never came) and duplicated
  (a run's webhook received twice, by its Idempotency-Key): both must be 0.

The receiver is bench/receiver.py (HTTP/1.1, keep-alive, in this process); private networks are
allowed to the server and the workers so the webhooks may call it.
"""

import asyncio
import collections
import time

import httpx
from django.db import transaction
from huey.contrib.djhuey import HUEY

from automation.core.choices import RunStatus
from automation.core.models import AutomationLog
from bench import data
from bench.b7_throughput import FINISHED, measure_rate
from bench.env import data_dir
from bench.live import update_stock
from bench.receiver import Receiver
from bench.server import Server
from bench.stats import Row, median, percentile
from bench.worker import start_workers, stop_workers, wait_ready

GOAL_VS_BY_HAND = 0.5
WORKERS = 2
CLIENTS = 8
STALL_SECONDS = 60  # the burst gives up when no webhook arrived for this long


def _runs(env, rule, items, receiver: Receiver) -> float:
    HUEY.flush()
    with transaction.atomic():
        ids = [log.pk for log in data.stock_runs(rule, items)]
    done = AutomationLog.objects.filter(pk__in=ids, status__in=FINISHED)
    rate = measure_rate(env, WORKERS, len(ids), done.count)
    failed = done.exclude(status=RunStatus.SUCCEEDED)
    if failed.exists():
        raise RuntimeError(f"{failed.count()} webhook runs did not succeed: {failed[0].error}")
    return rate


def _by_hand(env, items, receiver: Receiver, url: str) -> float:
    from bench.tasks import post_by_hand

    HUEY.flush()
    before = receiver.count()
    for product in items:
        post_by_hand(url, {"product": product.pk, "stock": product.stock})
    return measure_rate(env, WORKERS, len(items), lambda: receiver.count() - before)


async def _client(base_url, token, writes, sent: dict) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as client:
        for product, stock in writes:
            sent[(product.pk, stock)] = time.perf_counter()
            await update_stock(client, {}, product, stock)


async def _writes(base_url, token, products) -> tuple[dict, float]:
    """Each product's stock written once, by CLIENTS clients at once: (sent times, seconds)."""
    sent: dict = {}
    writes = [(product, 1000 + index) for index, product in enumerate(products)]
    started = time.perf_counter()
    await asyncio.gather(
        *(_client(base_url, token, writes[n::CLIENTS], sent) for n in range(CLIENTS))
    )
    return sent, time.perf_counter() - started


def _burst(env, mode, token, products, receiver: Receiver) -> dict:
    before = receiver.count()
    HUEY.flush()  # the throughput phase's last runs, popped by workers stopped since
    log = data_dir(mode) / "b11-burst-workers.log"
    log.write_text("")
    with Server(env, mode, ["--no-worker"]) as server:
        workers = start_workers(env, WORKERS, log_to=log)
        try:
            wait_ready(log, WORKERS)
            started = time.perf_counter()
            sent, writing = asyncio.run(_writes(server.base_url, token, products))
            _wait_for_deliveries(receiver, before, len(sent))
            exits = [worker.poll() for worker in workers]
        finally:
            stop_workers(workers)
    arrivals = receiver.arrivals[before:]
    first = {}
    by_key = collections.Counter(a.idempotency_key for a in arrivals)
    for arrival in arrivals:
        key = (int(arrival.body["product"]), int(arrival.body["stock"]))
        first.setdefault(key, arrival.at)
    latencies = [first[key] - at for key, at in sent.items() if key in first]
    last = max(first.values()) if first else started
    runs = AutomationLog.objects.filter(object_id__in=[str(p.pk) for p in products])
    states = collections.Counter(runs.values_list("status", flat=True))
    return {
        "unfinished": {status: n for status, n in states.items() if status != RunStatus.SUCCEEDED},
        "exits": exits,
        "log": log,
        "writes": len(sent),
        "writes_per_second": len(sent) / writing,
        "webhooks_per_second": len(first) / (last - started) if first else 0.0,
        "latencies": latencies,
        "lost": len(set(sent) - set(first)),
        "duplicated": sum(count - 1 for count in by_key.values()),
    }


def _why_lost(burst: dict) -> str:
    """Where the lost writes' runs were when the burst gave up (a run left PENDING by a dead
    worker is redelivered by the sweeper, which bench workers do not run)."""
    states = ", ".join(f"{n} {status}" for status, n in sorted(burst["unfinished"].items()))
    exits = ", ".join("running" if code is None else f"exited {code}" for code in burst["exits"])
    return f"; their runs: {states or 'none unfinished'}; workers: {exits} (log: {burst['log']})"


def _wait_for_deliveries(receiver: Receiver, before: int, expected: int) -> None:
    """Until every write's webhook came, or none came for STALL_SECONDS (then some are lost)."""
    seen, last_change = -1, time.monotonic()
    while time.monotonic() - last_change < STALL_SECONDS:
        count = receiver.count() - before
        if count >= expected:
            time.sleep(0.5)  # a duplicate would come now
            return
        if count != seen:
            seen, last_change = count, time.monotonic()
        time.sleep(0.05)


def run(ctx) -> list[Row]:
    items_count, burst_count = ctx.size((1000, 1000), (300, 300), (6, 16))
    data.drop_leftover_runs()
    org = data.organization("b11")
    _user, token = data.member_with_token(org)
    receiver = Receiver()
    env = dict(ctx.env, AUTOMATION_WEBHOOK_ALLOW_PRIVATE_NETWORKS="true")
    try:
        rule = data.webhook_rule(org, receiver.url(), "Webhook throughput")
        rule.refresh_from_db()
        items = data.products(org, items_count)
        by_hand = _by_hand(env, items, receiver, receiver.url())
        runs = _runs(env, rule, items, receiver)
        burst = _burst(env, ctx.mode, token, data.products(org, burst_count), receiver)
    finally:
        receiver.close()
    HUEY.flush()
    ratio = runs / by_hand
    latencies = burst["latencies"]
    p50 = median(latencies) if latencies else float("nan")
    p99 = percentile(latencies, 0.99) if latencies else float("nan")
    lost, duplicated = burst["lost"], burst["duplicated"]
    return [
        Row(
            bench=11,
            name=f"webhook throughput, {WORKERS} workers: webhook runs/s vs hand-written POST tasks/s",
            value=round(ratio, 3),
            unit="x",
            goal=f">= {GOAL_VS_BY_HAND}x",
            ok=ratio >= GOAL_VS_BY_HAND,
            detail=f"{runs:.1f} runs/s, {by_hand:.1f} hand-written tasks/s ({items_count} each)",
        ),
        Row(
            bench=11,
            name=f"burst of {burst['writes']:,} writes from {CLIENTS} clients: write -> webhook received p50",
            value=round(p50 * 1000, 1),
            unit="ms",
            detail=(
                f"p99 {p99 * 1000:.0f} ms; writes {burst['writes_per_second']:.1f}/s, webhooks "
                f"{burst['webhooks_per_second']:.1f}/s ({WORKERS} worker processes beside "
                "`serve --no-worker`)"
            ),
        ),
        Row(
            bench=11,
            name="burst: deliveries lost + duplicated",
            value=lost + duplicated,
            unit="",
            goal="0",
            ok=lost == 0 and duplicated == 0,
            detail=(
                f"{lost} lost, {duplicated} duplicated of {burst['writes']:,} writes"
                + ("" if not lost else _why_lost(burst))
            ),
        ),
    ]
