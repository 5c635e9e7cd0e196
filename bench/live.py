"""Shared by the live benchmarks (5, 6): the raw round trips, the data, the mutation."""

import asyncio
import time
import uuid

from channels.layers import get_channel_layer

from bench import data
from bench.consumer import running_consumer
from bench.stats import median

LOGS = """subscription($org: ID!) {
  automationLogs(organization: $org) { id seq status }
}"""
UPDATE_PRODUCT = """mutation($id: ID!, $input: ProductUpdateInput!) {
  updateProduct(id: $id, input: $input) { id stock }
}"""
FINAL = {"SUCCEEDED", "FAILED", "PARTIAL", "SKIPPED"}


def _stock_update(product, stock: int) -> dict:
    return {
        "query": UPDATE_PRODUCT,
        "variables": {"id": str(product.pk), "input": {"stock": stock}},
    }


def _succeeded(response) -> None:
    if response.status_code != 200 or response.json().get("errors"):
        raise RuntimeError(f"mutation failed: {response.text[:300]}")


async def update_stock(client, headers: dict, product, stock: int) -> None:
    """The live benchmarks' write: updateProduct over HTTP (an httpx.AsyncClient); must succeed."""
    _succeeded(await client.post("/graphql/", json=_stock_update(product, stock), headers=headers))


def update_stock_now(client, product, stock: int) -> None:
    """update_stock with an httpx.Client (its headers carry the token)."""
    _succeeded(client.post("/graphql/", json=_stock_update(product, stock)))


def setup_data(prefix: str):
    """(organization, token, product, rule): a member's token and the benchmark rule."""
    org = data.organization(prefix)
    user, token = data.member_with_token(org)
    rule = data.event_rule(org, user=user)
    product = data.products(org, 1)[0]
    return org, token, product, rule


def channel_round_trips(count: int) -> list[float]:
    """group_send -> receive on this mode's channel layer (in-memory, or Redis pub/sub)."""
    layer = get_channel_layer()

    async def measure():
        channel = await layer.new_channel()
        group = f"bench.{uuid.uuid4().hex}"
        await layer.group_add(group, channel)
        times = []
        for index in range(count + 3):
            started = time.perf_counter()
            await layer.group_send(group, {"type": "bench.ping", "n": index})
            await layer.receive(channel)
            if index >= 3:  # the first sends open connections and subscriptions
                times.append(time.perf_counter() - started)
        await layer.group_discard(group, channel)
        return times

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(measure())
    finally:
        loop.close()


def queue_round_trips(count: int, workers: int = 2) -> list[float]:
    """Enqueue a task -> it runs, on this mode's queue with an idle consumer (serve's threads).

    The idle gap between probes lets the workers settle into their idle polling, as a server
    between two mutations does.
    """
    from bench.tasks import ping, probe

    times = []
    with running_consumer(workers=workers):
        for index in range(count + 2):
            token = uuid.uuid4().hex
            event = probe(token)
            time.sleep(0.1)
            started = time.perf_counter()
            ping(token)
            if not event.wait(30):
                raise TimeoutError("the queue round trip did not come back")
            if index >= 2:
                times.append(time.perf_counter() - started)
    return times


def baseline(count: int) -> tuple[float, float]:
    """Median raw channel-layer and raw queue round trips (seconds)."""
    return median(channel_round_trips(count)), median(queue_round_trips(count))
