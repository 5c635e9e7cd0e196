"""5. From a GraphQL mutation to the subscriber's final log event: what the engine adds to the
mutation, against what a hand-written pipeline doing the same work adds.

A real server in each mode's documented deployment: embedded, `manage.py serve` with its
in-process Huey consumer; redis, `manage.py serve --no-worker` and a separate worker process (one
thread, what `run_huey -w 1` is), as the README's distributed deployment runs them. A member
subscribes to automationLogs over graphql-transport-ws in two organizations. Three kinds of
rounds, interleaved (each round one at a time, after a short pause, the kinds in turn so that a
slow minute of a shared machine weighs on all three alike):

- engine: `updateProduct` of a product's stock, which fires the benchmark rule (1 condition, 1
  UPDATE_RECORD): timed to the run's PENDING event (first) and its SUCCEEDED event (final);
- hand-written (bench/handwritten.py): the same mutation on a product of the second
  organization, which has no rule; a hand-written receiver turns it into a hand-written Huey task
  that checks the condition, updates the description and publishes one log-shaped event through
  the engine's publication path, delivered by the same kind of subscription: timed to that event;
- recorded (bench/recorded.py, a reference without a goal): the hand-written pipeline plus the
  least record of a run, on a third product of the second organization: a PENDING log inserted
  with the write, then the task locks it, publishes RUNNING, does the same check and update,
  writes the outcome with a guarded UPDATE and publishes it (three log events, as the engine's
  contract has), all by hand with SQL compiled once: timed to the outcome's event. What it adds
  is the floor of "write the run's record and publish two more events" on this machine;
- floor: the same mutation on another product of the second organization (no rule, no
  receiver), timed to its HTTP response. No event can arrive before the write that causes it.

The goal is on what the engine adds, its final p50 minus the floor p50: at most 2x what the
hand-written pipeline adds (its final p50 minus the same floor p50), in the same run (issue 22).
What the engine does beyond the pipeline is its record of the run (the PENDING log written with
the write, the claim, the state changes, the condition trace) and the events its contract
promises (PENDING, RUNNING and the outcome, and each action's changes).

The raw round trips (a channel-layer group_send -> receive, a Huey enqueue -> the task runs, idle
consumer) are measured before the server starts and printed for reference.
"""

import asyncio
import contextlib
import time
from dataclasses import dataclass

import httpx

from accounts.choices import Role
from accounts.models import Membership
from bench import data
from bench.data import HANDWRITTEN_PREFIX, RECORDED_PREFIX
from bench.env import EMBEDDED
from bench.live import FINAL, LOGS, baseline, update_stock
from bench.server import SERVE_WITH_HANDWRITTEN, Server
from bench.stats import Row, median, percentile
from bench.worker import start_workers, stop_workers
from bench.wsclient import Subscriber
from catalog.models import Product

ENGINE, BY_HAND, RECORDED, FLOOR = "engine", "hand-written", "recorded", "floor"
KINDS = (ENGINE, BY_HAND, RECORDED, FLOOR)
PAUSE = 0.15  # seconds between two rounds: the workers settle into their idle polling
WARM_UP = 2  # rounds of each kind, not counted
# The goal: the engine adds at most this many times what the hand-written pipeline adds.
GOAL_FACTOR = 2


@dataclass
class Round:
    """One timed mutation (perf_counter times); `log_id` of the event it caused, if any."""

    kind: str
    started: float
    response: float
    first: float | None = None
    final: float | None = None
    log_id: int | None = None


@dataclass
class Subjects:
    """What benchmark 5 updates, and who watches: (product, organization) per kind."""

    token: str
    rule: object
    products: dict  # kind -> Product
    organizations: dict  # kind -> organization id subscribed to (None for the floor)


def setup() -> Subjects:
    """A member of two organizations: the first with the benchmark rule, the second without
    rules, where the hand-written pipeline and the floor write."""
    org = data.organization("b5")
    user, token = data.member_with_token(org)
    rule = data.event_rule(org, user=user)
    product = data.products(org, 1)[0]
    quiet = data.organization("b5-no-rule")
    Membership.objects.create(user=user, organization=quiet, role=Role.ADMIN)
    by_hand, recorded = (
        Product.objects.create(
            organization=quiet, name=f"{prefix} 1", status="ACTIVE", price="9.99", stock=1
        )
        for prefix in (HANDWRITTEN_PREFIX, RECORDED_PREFIX)
    )
    # The rule the recorded pipeline's logs belong to: inactive, so the engine runs nothing here.
    inactive = data.event_rule(quiet, name=RECORDED_RULE, user=user)
    inactive.is_active = False
    inactive.save()
    floor = data.products(quiet, 1)[0]
    return Subjects(
        token,
        rule,
        {ENGINE: product, BY_HAND: by_hand, RECORDED: recorded, FLOOR: floor},
        {ENGINE: org.pk, BY_HAND: quiet.pk, RECORDED: quiet.pk, FLOOR: None},
    )


RECORDED_RULE = "Restock note, recorded by hand (inactive)"  # bench/recorded.py's RULE_NAME


async def _until_final(subscriber, new_event, mark: int, seen: set, timed: Round, task):
    """Wait for the first event of a log not seen before, then for that log's final event."""
    deadline = time.monotonic() + 30
    while timed.final is None:
        for arrived, payload in subscriber.events[mark:]:
            log = payload["automationLogs"]
            if timed.log_id is None:
                if log["id"] in seen:
                    continue
                timed.first, timed.log_id = arrived, log["id"]
                seen.add(log["id"])
            if log["id"] == timed.log_id and log["status"] in FINAL:
                timed.final = arrived
        mark = len(subscriber.events)
        if timed.final is None:
            if time.monotonic() > deadline or task.done():
                raise TimeoutError(f"no final event: {subscriber.errors}")
            new_event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(new_event.wait(), 1)


async def interleaved_rounds(server, subjects: Subjects, rounds: int) -> list[Round]:
    """`rounds` of each kind (after the warm-up), the kinds in turn, starting each time with the
    next kind. Returns every round, warm-up included (first WARM_UP of each kind)."""
    subscribers, tasks, signals = {}, {}, {}
    for kind in (ENGINE, BY_HAND, RECORDED):
        organization = subjects.organizations[kind]
        shared = next(
            (other for other in subscribers if subjects.organizations[other] == organization), None
        )
        if shared is not None:  # one subscription per organization
            subscribers[kind], signals[kind], tasks[kind] = (
                subscribers[shared],
                signals[shared],
                tasks[shared],
            )
            continue
        subscriber = Subscriber(server.ws_url, subjects.token, LOGS, {"org": str(organization)})
        await subscriber.open()
        signal = signals[kind] = asyncio.Event()
        subscribers[kind] = subscriber
        tasks[kind] = asyncio.create_task(subscriber.listen(lambda *_, s=signal: s.set()))
    seen: set[str] = set()
    done: list[Round] = []
    headers = {"Authorization": f"Bearer {subjects.token}"}
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            for index in range(rounds + WARM_UP):
                for turn in range(len(KINDS)):
                    kind = KINDS[(index + turn) % len(KINDS)]
                    await asyncio.sleep(PAUSE)
                    subscriber = subscribers.get(kind)
                    mark = len(subscriber.events) if subscriber else 0
                    started = time.perf_counter()
                    await update_stock(client, headers, subjects.products[kind], 100 + index)
                    timed = Round(kind, started, time.perf_counter())
                    if subscriber is not None:
                        await _until_final(
                            subscriber, signals[kind], mark, seen, timed, tasks[kind]
                        )
                    done.append(timed)
    finally:
        for kind in {id(task): kind for kind, task in tasks.items()}.values():
            tasks[kind].cancel()
            await subscribers[kind].close()
    return done


def measured(rounds: list[Round], kind: str) -> list[Round]:
    """The rounds of `kind` after its warm-up."""
    return [timed for timed in rounds if timed.kind == kind][WARM_UP:]


def run(ctx) -> list[Row]:
    # 80 rounds of each kind: the p50 of 40 moved the hand-written share (a few ms) by a third.
    rounds, probes = ctx.size((80, 30), (15, 10), (2, 2))
    subjects = setup()
    channel, queue = baseline(probes)
    separate_worker = ctx.mode != EMBEDDED
    with Server(
        ctx.env,
        ctx.mode,
        ["--no-worker"] if separate_worker else [],
        command=SERVE_WITH_HANDWRITTEN,
    ) as server:
        workers = start_workers(ctx.env, 1, handwritten=True) if separate_worker else []
        try:
            timed = asyncio.run(interleaved_rounds(server, subjects, rounds))
        finally:
            stop_workers(workers)
    engine, by_hand = measured(timed, ENGINE), measured(timed, BY_HAND)
    floors = [r.response - r.started for r in measured(timed, FLOOR)]
    firsts = [r.first - r.started for r in engine]
    finals = [r.final - r.started for r in engine]
    handwritten = [r.final - r.started for r in by_hand]
    recorded = [r.final - r.started for r in measured(timed, RECORDED)]
    floor = median(floors)
    raw = f"raw round trips: channel {channel * 1000:.2f} ms + queue {queue * 1000:.2f} ms"
    if separate_worker:
        raw += "; runs executed by a worker process beside `serve --no-worker`"
    rows = [
        _handwritten_row(median(finals), median(handwritten), floor, rounds),
        _engine_row(median(finals), floor, raw, rounds),
        _recorded_row(median(finals), median(handwritten), median(recorded), floor, rounds),
    ]
    for name, values in (
        ("first", firsts),
        ("final", finals),
        ("hand-written final", handwritten),
        ("recorded final", recorded),
    ):
        rows.append(
            Row(
                bench=5,
                name=f"mutation -> {name} log event, p50",
                value=round(median(values) * 1000, 2),
                unit="ms",
                detail=f"p99 {percentile(values, 0.99) * 1000:.1f} ms; {raw} ({rounds} rounds)",
            )
        )
    rows.append(
        Row(
            bench=5,
            name="floor: the same mutation with no rule, HTTP round trip p50",
            value=round(floor * 1000, 2),
            unit="ms",
            detail=(
                f"p99 {percentile(floors, 0.99) * 1000:.1f} ms (the write every event waits for; "
                f"{rounds} rounds)"
            ),
        )
    )
    return rows


def _engine_row(final: float, floor: float, raw: str, rounds: int) -> Row:
    """What the engine adds to the mutation: final event p50 - floor p50 (no goal of its own)."""
    return Row(
        bench=5,
        name="engine latency: final event p50 - floor p50",
        value=round((final - floor) * 1000, 2),
        unit="ms",
        detail=(
            f"final p50 {final * 1000:.1f} ms - floor p50 {floor * 1000:.1f} ms; {raw} "
            f"({rounds} rounds)"
        ),
    )


def _handwritten_row(final: float, handwritten: float, floor: float, rounds: int) -> Row:
    """THE goal of benchmark 5: what the engine adds against what the hand-written pipeline adds
    (each final p50 - floor p50), at most GOAL_FACTOR x."""
    engine, by_hand = final - floor, handwritten - floor
    ratio = engine / by_hand if by_hand > 0 else float("inf")
    return Row(
        bench=5,
        name="engine latency vs hand-written pipeline's (each final p50 - floor p50)",
        value=round(ratio, 3) if by_hand > 0 else 0.0,
        unit="x",
        goal=f"<= {GOAL_FACTOR}x",
        ok=ratio <= GOAL_FACTOR,
        detail=(
            f"engine {engine * 1000:.1f} ms, hand-written {by_hand * 1000:.1f} ms (final p50 "
            f"{final * 1000:.1f} and {handwritten * 1000:.1f} ms - floor p50 "
            f"{floor * 1000:.1f} ms; interleaved, {rounds} rounds each)"
        ),
    )


def _recorded_row(
    final: float, handwritten: float, recorded: float, floor: float, rounds: int
) -> Row:
    """The reference: what the hand-written pipeline with a run record adds, against what the
    plain one adds (no goal: the least any engine keeping the contract's record pays)."""
    engine, by_hand, with_record = final - floor, handwritten - floor, recorded - floor
    ratio = with_record / by_hand if by_hand > 0 else 0.0
    return Row(
        bench=5,
        name="reference: hand-written pipeline with a run record vs without (each - floor p50)",
        value=round(ratio, 3),
        unit="x",
        detail=(
            f"with a record {with_record * 1000:.1f} ms, without {by_hand * 1000:.1f} ms, the "
            f"engine {engine * 1000:.1f} ms (engine vs with a record: "
            f"{engine / with_record if with_record > 0 else 0:.2f}x; {rounds} rounds each)"
        ),
    )
