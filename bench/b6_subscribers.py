"""6. 500 concurrent WebSocket subscribers on one server process: delivery share and spread.

500 graphql-transport-ws connections subscribe to automationLogs of one organization on one
`manage.py serve` process, as many members as GRAPHQL_MAX_WEBSOCKETS_PER_USER requires (20
connections each by default: 25 members, as 500 dashboards of a team would be); then R product updates each fire one run, whose 3
log events (PENDING, RUNNING, SUCCEEDED) must reach every subscriber. Delivered share =
events received / (subscribers x events published). Latency = from sending the mutation to each
subscriber's arrival of that run's PENDING event; p99 / p50 over all subscribers and runs shows
how evenly one process fans out.

A warm-up run comes first and is not counted: the server acknowledges a connection before it has
set up its subscription (validation, the first membership read), so measuring right after opening
500 connections timed that setup backlog in the first run. Every subscriber receiving the warm-up
run's final event shows that every subscription is in place.
"""

import asyncio
import time

import httpx
from django.conf import settings

from bench import data
from bench.live import FINAL, LOGS, setup_data, update_stock
from bench.server import Server
from bench.stats import Row, median, percentile
from bench.wsclient import Subscriber

EVENTS_PER_RUN = 3  # PENDING, RUNNING (claimed with its plan: one transaction), SUCCEEDED
OPEN_BATCH = 50


async def _until_finished(clients, runs: int, timeout: float = 60) -> None:
    """Until every subscriber has the final event of `runs` runs (or the timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(
            sum(e[1]["automationLogs"]["status"] in FINAL for e in c.events) >= runs
            for c in clients
        ):
            return
        await asyncio.sleep(0.2)


def _tokens(org, token, subscribers: int) -> list[str]:
    """A token per subscriber: `token` and other members', each used at most the per-user cap."""
    per_user = max(settings.GRAPHQL_MAX_WEBSOCKETS_PER_USER, 1)
    users = -(-subscribers // per_user)
    tokens = [token] + [data.member_with_token(org)[1] for _ in range(users - 1)]
    return [tokens[index // per_user] for index in range(subscribers)]


async def _measure(server, org, tokens, product, subscribers: int, runs: int):
    token = tokens[0]
    clients = [Subscriber(server.ws_url, each, LOGS, {"org": str(org.pk)}) for each in tokens]
    for start in range(0, subscribers, OPEN_BATCH):
        await asyncio.gather(*(c.open() for c in clients[start : start + OPEN_BATCH]))
    tasks = [asyncio.create_task(c.listen()) for c in clients]
    headers = {"Authorization": f"Bearer {token}"}
    sent: list[float] = []
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
            await update_stock(client, headers, product, 499)  # the warm-up run
            await _until_finished(clients, 1)
            for c in clients:
                c.events.clear()
            for index in range(runs):
                sent.append(time.perf_counter())
                await update_stock(client, headers, product, 500 + index)
                await asyncio.sleep(1.0)
        expected = runs * EVENTS_PER_RUN
        await _until_finished(clients, runs)
        await asyncio.sleep(0.5)  # stragglers
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    # Runs in publication order: a run's id is the order of its PENDING event.
    run_ids = sorted({int(e[1]["automationLogs"]["id"]) for c in clients for e in c.events})[:runs]
    latencies = []
    for c in clients:
        for arrived, payload in c.events:
            log = payload["automationLogs"]
            if log["status"] == "PENDING" and int(log["id"]) in run_ids:
                latencies.append(arrived - sent[run_ids.index(int(log["id"]))])
    received = sum(len(c.events) for c in clients)
    errors = sum(len(c.errors) for c in clients)
    return received, subscribers * expected, latencies, errors


def run(ctx) -> list[Row]:
    subscribers, runs = ctx.size((500, 5), (200, 2), (5, 1))
    org, token, product, _ = setup_data("b6")
    tokens = _tokens(org, token, subscribers)
    with Server(ctx.env, ctx.mode) as server:
        received, expected, latencies, errors = asyncio.run(
            _measure(server, org, tokens, product, subscribers, runs)
        )
    share = received / expected if expected else 0.0
    p50, p99 = median(latencies), percentile(latencies, 0.99)
    spread = p99 / p50
    return [
        Row(
            bench=6,
            name=f"{subscribers} subscribers: share of events delivered",
            value=round(share * 100, 2),
            unit="%",
            goal="100%",
            ok=received == expected and errors == 0,
            detail=f"{received} of {expected} events ({runs} runs), {errors} errors",
        ),
        Row(
            bench=6,
            name=f"{subscribers} subscribers: delivery latency p99 vs p50",
            value=round(spread, 3),
            unit="x",
            goal="<= 5x",
            ok=spread <= 5,
            detail=f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms (mutation -> PENDING event)",
        ),
    ]
