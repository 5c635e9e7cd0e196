"""5. From a GraphQL mutation to the subscriber's first and final log event, and what the engine
adds to the mutation itself.

A real server in each mode's documented deployment: embedded, `manage.py serve` with its
in-process Huey consumer; redis, `manage.py serve --no-worker` and a separate worker process (one
thread, what `run_huey -w 1` is), as the README's distributed deployment runs them, so the run
does not share the server's interpreter lock with the request. A member subscribes to
automationLogs over graphql-transport-ws; each round updates a product's stock with the
`updateProduct` mutation, which fires the benchmark rule (1 condition, 1 UPDATE_RECORD). Measured
from sending the mutation to the arrival of the run's PENDING event (first) and of its SUCCEEDED
event (final). Rounds run one at a time, with a short pause between them.

The floor: the same mutation over HTTP with the rule switched off (no run, no event), timed to
its response. No engine can deliver an event sooner than the write that causes it, so the goal
is on what the engine adds: final p50 minus floor p50.

The hand-written pipeline (bench/handwritten.py, no goal): the same mutation, with the rule off,
on a product whose update a hand-written receiver turns into a hand-written Huey task that
checks the condition, updates the description and publishes one log-shaped event, delivered by
the same subscription. Its final p50 minus the floor is what any automation of this write pays;
the engine's share is printed against it.

- redis: at most 3x the raw round trips, a raw channel-layer round trip (group_send -> receive)
  plus a raw Huey round trip (enqueue -> the task runs, idle consumer with serve's settings),
  both measured in the same run before the server starts (its consumer would take the probes);
- embedded: at most 5 ms. The queue is in the server's own process, so a new run wakes a worker
  at once; the raw round trips are printed for reference.
"""

import asyncio
import contextlib
import time

import httpx

from bench.data import HANDWRITTEN_PREFIX
from bench.env import EMBEDDED
from bench.live import FINAL, LOGS, baseline, setup_data, update_stock
from bench.server import SERVE_WITH_HANDWRITTEN, Server
from bench.stats import Row, median, percentile
from bench.worker import start_workers, stop_workers
from bench.wsclient import Subscriber
from catalog.models import Product


async def _rounds(server, org, token, product, rounds: int):
    subscriber = Subscriber(server.ws_url, token, LOGS, {"org": str(org.pk)})
    await subscriber.open()
    new_event = asyncio.Event()
    subscriber_task = asyncio.create_task(subscriber.listen(lambda *_: new_event.set()))
    firsts, finals = [], []
    seen: set[str] = set()
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            for index in range(rounds + 2):  # 2 warm-up rounds
                await asyncio.sleep(0.2)
                mark = len(subscriber.events)
                started = time.perf_counter()
                await update_stock(client, headers, product, 100 + index)
                first = final = None
                deadline = time.monotonic() + 30
                while final is None:
                    for arrived, payload in subscriber.events[mark:]:
                        log = payload["automationLogs"]
                        if log["id"] in seen and first is None:
                            continue
                        if first is None:
                            first = arrived
                            seen.add(log["id"])
                        if log["status"] in FINAL:
                            final = arrived
                    mark = len(subscriber.events)
                    if final is None:
                        if time.monotonic() > deadline or subscriber_task.done():
                            raise TimeoutError(f"no final event: {subscriber.errors}")
                        new_event.clear()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(new_event.wait(), 1)
                if index >= 2:
                    firsts.append(first - started)
                    finals.append(final - started)
    finally:
        subscriber_task.cancel()
        await subscriber.close()
    return firsts, finals


async def _floor(server, token, product, rounds: int) -> list[float]:
    """The mutation's own HTTP round trip, with no rule watching it."""
    times = []
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        for index in range(rounds + 2):  # 2 warm-up rounds
            await asyncio.sleep(0.05)
            started = time.perf_counter()
            await update_stock(client, headers, product, 500 + index)
            if index >= 2:
                times.append(time.perf_counter() - started)
    return times


# The goals on what the engine adds to the mutation (final event p50 - floor p50).
REDIS_GOAL_FACTOR = 3  # x the raw round trips
EMBEDDED_GOAL_MS = 5


def run(ctx) -> list[Row]:
    rounds, probes = ctx.size((40, 30), (15, 10), (2, 2))
    org, token, product, rule = setup_data("b5")
    channel, queue = baseline(probes)
    base = channel + queue
    by_hand = Product.objects.create(
        organization=org, name=f"{HANDWRITTEN_PREFIX} 1", status="ACTIVE", price="9.99", stock=1
    )
    separate_worker = ctx.mode != EMBEDDED
    with Server(
        ctx.env,
        ctx.mode,
        ["--no-worker"] if separate_worker else [],
        command=SERVE_WITH_HANDWRITTEN,
    ) as server:
        workers = start_workers(ctx.env, 1, handwritten=True) if separate_worker else []
        try:
            firsts, finals = asyncio.run(_rounds(server, org, token, product, rounds))
            rule.is_active = False
            rule.save()
            _, handwritten = asyncio.run(_rounds(server, org, token, by_hand, rounds))
        finally:
            stop_workers(workers)
        floors = asyncio.run(_floor(server, token, product, rounds))
    floor = median(floors)
    raw = f"raw: channel {channel * 1000:.2f} ms + queue {queue * 1000:.2f} ms"
    if separate_worker:
        raw += "; runs executed by a worker process beside `serve --no-worker`"
    rows = []
    for name, values in (("first", firsts), ("final", finals)):
        p50, p99 = median(values), percentile(values, 0.99)
        rows.append(
            Row(
                bench=5,
                name=f"mutation -> {name} log event, p50 vs raw round trips",
                value=round(p50 / base, 3),
                unit="x",
                detail=f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms; {raw} ({rounds} rounds)",
            )
        )
    rows.append(_engine_row(ctx.mode, median(finals), floor, base, raw, rounds))
    rows.append(_handwritten_row(median(finals), median(handwritten), floor, rounds))
    rows.append(
        Row(
            bench=5,
            name="floor: the same mutation with no rule, HTTP round trip p50 vs raw round trips",
            value=round(floor / base, 3),
            unit="x",
            detail=(
                f"p50 {floor * 1000:.1f} ms, p99 {percentile(floors, 0.99) * 1000:.1f} ms "
                f"(the write every event waits for; {rounds} rounds)"
            ),
        )
    )
    return rows


def _engine_row(mode: str, final: float, floor: float, base: float, raw: str, rounds: int) -> Row:
    """What the engine adds to the mutation: final event p50 - floor p50, against its goal."""
    added = final - floor
    detail = f"final p50 {final * 1000:.1f} ms - floor p50 {floor * 1000:.1f} ms"
    name = "engine latency: final event p50 - floor p50"
    if mode == EMBEDDED:
        return Row(
            bench=5,
            name=name,
            value=round(added * 1000, 2),
            unit="ms",
            goal=f"<= {EMBEDDED_GOAL_MS} ms",
            ok=added * 1000 <= EMBEDDED_GOAL_MS,
            detail=f"{detail}; {raw} ({rounds} rounds)",
        )
    ratio = added / base
    return Row(
        bench=5,
        name=f"{name}, vs raw round trips",
        value=round(ratio, 3),
        unit="x",
        goal=f"<= {REDIS_GOAL_FACTOR}x",
        ok=ratio <= REDIS_GOAL_FACTOR,
        detail=(
            f"{added * 1000:.1f} ms = {detail}; goal {REDIS_GOAL_FACTOR * base * 1000:.1f} ms; "
            f"{raw} ({rounds} rounds)"
        ),
    )


def _handwritten_row(final: float, handwritten: float, floor: float, rounds: int) -> Row:
    """What the engine adds against what the hand-written pipeline adds (both minus the floor)."""
    engine, by_hand = final - floor, handwritten - floor
    return Row(
        bench=5,
        name="hand-written pipeline: engine latency vs its own (each final p50 - floor p50)",
        value=round(engine / by_hand, 3) if by_hand > 0 else 0.0,
        unit="x",
        detail=(
            f"engine {engine * 1000:.1f} ms, hand-written {by_hand * 1000:.1f} ms (its final p50 "
            f"{handwritten * 1000:.1f} ms - floor p50 {floor * 1000:.1f} ms; {rounds} rounds)"
        ),
    )
