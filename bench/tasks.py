"""Hand-written Huey tasks: the baselines the engine's runs are compared with.

They are registered on the project's Huey instance (same queue, same consumer settings as the
engine's tasks), so a baseline pays exactly the queue costs a run pays.
"""

import json
import threading

from django.db import transaction
from huey.contrib.djhuey import HUEY, db_task, task

from catalog.models import Product

# The hand-written webhook's client (benchmark 11): one per worker process, its connections kept.
_webhook_client = None

# Round-trip probes (same process as the consumer): token -> Event set by the task.
_arrived: dict[str, threading.Event] = {}


@db_task()
def update_product_by_hand(product_id: int, description: str) -> None:
    """What the benchmark rule does, written by hand: check the condition, update the record."""
    with transaction.atomic():
        product = Product.objects.select_for_update().get(pk=product_id)
        if product.status == "ACTIVE":
            product.description = description
            product.save()


@task()
def post_by_hand(url: str, body: dict) -> None:
    """What a webhook rule does, written by hand: POST the JSON body, fail unless 2xx."""
    global _webhook_client
    if _webhook_client is None:
        import httpx

        _webhook_client = httpx.Client(timeout=10)
    response = _webhook_client.post(
        url,
        content=json.dumps(body, separators=(",", ":")).encode(),
        headers={"Content-Type": "application/json"},
    )
    response.raise_for_status()


@task()
def noop() -> None:
    """Nothing at all (raw queue throughput)."""


@task()
def count_done(key: str) -> None:
    """One Redis INCR, so the bench can count finished tasks from outside the worker."""
    HUEY.storage.conn.incr(key)


@task()
def ping(token: str) -> None:
    """Set the waiting probe's event (raw queue round trip, consumer in the bench process)."""
    event = _arrived.get(token)
    if event is not None:
        event.set()


def probe(token: str) -> threading.Event:
    event = _arrived[token] = threading.Event()
    return event
