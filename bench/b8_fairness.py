"""8. Fairness between organizations: a victim's run latency with and without an attacker.

A real server in each mode's documented deployment (embedded: `manage.py serve` with its two
worker threads; redis: `serve --no-worker` beside two worker processes). The victim is a member
who updates a product's stock over GraphQL, which fires the benchmark rule (1 condition, 1
UPDATE_RECORD); each round waits for that run to finish and keeps its latency, from the run's
creation to its end (the server's own timestamps).

The attacker stays within every budget, as an ordinary account can: a backlog of queued runs of
its own (the benchmark rule over many products, queued at once, as a bulk edit makes them) and,
all along, two `createProduct` a second firing a self-triggering rule with three CREATE_RECORD
actions, so each write grows a tree up to AUTOMATION_MAX_RUNS_PER_ROOT runs.

The figure: the victim's p50 with the attacker against its p50 alone, measured in the same run,
alone first. Goal: at most 2x.
"""

import threading
import time

import httpx
from django.db import transaction

from automation.core.choices import RunStatus
from automation.core.models import AutomationLog
from bench import data
from bench.env import EMBEDDED
from bench.live import UPDATE_PRODUCT
from bench.server import Server
from bench.stats import Row, median, percentile
from bench.worker import start_workers, stop_workers

GOAL = 2.0
FINISHED = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.PARTIAL, RunStatus.SKIPPED)
CREATE_PRODUCT = """mutation($input: ProductInput!) { createProduct(input: $input) { id } }"""


def _post(client: httpx.Client, token: str, query: str, variables: dict) -> None:
    response = client.post(
        "/graphql/",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token}"},
    )
    if response.status_code != 200 or response.json().get("errors"):
        raise RuntimeError(f"mutation failed: {response.text[:300]}")


def _victim_rounds(server, token, product, rule, rounds: int, waits: list) -> list[float]:
    """Latency (created -> finished) of the victim's run, one round at a time; the part of it
    spent waiting for a worker (created -> started) goes into `waits`."""
    latencies = []
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        for index in range(rounds + 2):  # 2 warm-up rounds
            time.sleep(0.2)
            before = AutomationLog.objects.filter(rule=rule).order_by("-pk").values("pk").first()
            _post(
                client,
                token,
                UPDATE_PRODUCT,
                {"id": str(product.pk), "input": {"stock": 1000 + index}},
            )
            runs = AutomationLog.objects.filter(rule=rule, pk__gt=before["pk"] if before else 0)
            deadline = time.monotonic() + 120
            while True:
                found = runs.filter(status__in=FINISHED).values(
                    "created_at", "started_at", "finished_at"
                )
                if found:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError("the victim's run did not finish in 120 s")
                time.sleep(0.005)
            if index >= 2:
                run = found[0]
                latencies.append((run["finished_at"] - run["created_at"]).total_seconds())
                waits.append((run["started_at"] - run["created_at"]).total_seconds())
    return latencies


def _attack(server, token, org, stop: threading.Event, writes: list) -> None:
    """Two writes a second that fire the self-multiplying rule, until `stop`."""
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        number = 0
        while not stop.is_set():
            started = time.monotonic()
            _post(
                client,
                token,
                CREATE_PRODUCT,
                {"input": {"organization": str(org.pk), "name": f"seed {number}"}},
            )
            number += 1
            writes.append(number)
            stop.wait(max(0.5 - (time.monotonic() - started), 0))


def _multiplying_rule(org, user):
    from automation.rules.services import create_rule

    return create_rule(
        org,
        {
            "name": "Multiply by 3",
            "trigger_type": "EVENT",
            "model": "catalog.product",
            "trigger_event": "CREATED",
            "allow_self_trigger": True,
            "actions": [
                {
                    "action_type": "CREATE_RECORD",
                    "parameters": {
                        "model": "catalog.product",
                        "fields": {"name": f"copy {number} of {{{{ object.name }}}}"},
                    },
                }
                for number in range(3)
            ],
        },
        user=user,
    )


def run(ctx) -> list[Row]:
    rounds, backlog = ctx.size((30, 3000), (12, 1000), (2, 30))
    victim = data.organization("b8-victim")
    _, victim_token = data.member_with_token(victim)
    victim_rule = data.event_rule(victim)
    victim_product = data.products(victim, 1)[0]
    attacker = data.organization("b8-attacker")
    attacker_user, attacker_token = data.member_with_token(attacker)
    attacker_rule = data.event_rule(attacker, user=attacker_user)
    _multiplying_rule(attacker, attacker_user)
    attacker_products = data.products(attacker, backlog)

    separate_worker = ctx.mode != EMBEDDED
    waits_alone, waits_attacked = [], []
    with Server(ctx.env, ctx.mode, ["--no-worker"] if separate_worker else []) as server:
        workers = start_workers(ctx.env, 2) if separate_worker else []
        try:
            alone = _victim_rounds(
                server, victim_token, victim_product, victim_rule, rounds, waits_alone
            )
            with transaction.atomic():
                data.stock_runs(attacker_rule, attacker_products)
            stop, writes = threading.Event(), []
            attack = threading.Thread(
                target=_attack, args=(server, attacker_token, attacker, stop, writes)
            )
            attack.start()
            try:
                time.sleep(1)  # the backlog is queued and the trees are growing
                attacked = _victim_rounds(
                    server, victim_token, victim_product, victim_rule, rounds, waits_attacked
                )
            finally:
                stop.set()
                attack.join(timeout=60)
            attacker_runs = AutomationLog.objects.filter(organization=attacker).count()
            waiting = AutomationLog.objects.filter(
                organization=attacker, status=RunStatus.PENDING
            ).count()
        finally:
            stop_workers(workers)
    p50_alone, p50_attacked = median(alone), median(attacked)
    ratio = p50_attacked / p50_alone
    return [
        Row(
            bench=8,
            name="fairness: victim's run p50 with an attacker at full budget vs alone",
            value=round(ratio, 3),
            unit="x",
            goal=f"<= {GOAL}x",
            ok=ratio <= GOAL,
            detail=(
                f"p50 {p50_attacked * 1000:.1f} ms vs {p50_alone * 1000:.1f} ms alone "
                f"(p99 {percentile(attacked, 0.99) * 1000:.1f} vs "
                f"{percentile(alone, 0.99) * 1000:.1f} ms; waiting for a worker p50 "
                f"{median(waits_attacked) * 1000:.1f} vs {median(waits_alone) * 1000:.1f} ms); attacker: {backlog} runs queued "
                f"at once, {len(writes)} multiplying writes, {attacker_runs} runs in all, "
                f"{waiting} still PENDING at the end ({rounds} rounds)"
            ),
        )
    ]
