"""Benchmark 5's hand-written pipeline: the benchmark rule's work wired by hand, no engine.

An update of a product whose name starts with HANDWRITTEN_PREFIX enqueues, after its commit, a
hand-written Huey task that checks the rule's condition, updates the description (as the
benchmark rule and `bench.tasks.update_product_by_hand` do) and publishes one event shaped like a
finished run's log (SUCCEEDED, or SKIPPED when the condition is not met) to the organization's
group, through the engine's own publication path. A subscriber's `automationLogs` subscription
delivers it like any run event. So the pipeline pays what any rule-like automation must: a
receiver, the queue, the update, one event delivered; the engine adds its record of the run (the
PENDING log, the claim, its state changes, the condition trace), two more log events (PENDING,
RUNNING) and its action events.

Imported only by the bench's server (`python -m bench.serve`) and workers (`python -m
bench.worker --handwritten`), never by the bench process: benchmark 1 counts the receivers of a
product save.
"""

import itertools
import time

from django.db import transaction
from django.db.models.signals import post_save
from huey.contrib.djhuey import db_task

from automation.core.choices import RunStatus
from automation.core.models import AutomationLog, AutomationRule
from automation.live import events as live
from bench.data import HANDWRITTEN_PREFIX
from catalog.models import Product

RULE_NAME = "Restock note, by hand"

# Ids of the published events: each distinct (the bench tells rounds apart by id), never a run's.
_event_ids = itertools.count(int(time.time() * 1000) * 1000)


@db_task()
def handwritten_run(product_id: int, organization_id: int, event_id: int) -> None:
    """Check, update, publish one event (after the commit)."""
    with transaction.atomic():
        product = Product.objects.select_for_update().get(pk=product_id)
        met = product.status == "ACTIVE"
        if met:
            product.description = f"restocked to {product.stock}"
            product.save(update_fields=["description", "updated_at", "updated_by"])
        rule = AutomationRule(id=0, name=RULE_NAME, organization_id=organization_id)
        live.publish_log(
            AutomationLog(
                id=event_id,
                rule=rule,
                organization_id=organization_id,
                status=RunStatus.SUCCEEDED if met else RunStatus.SKIPPED,
                seq=1,
                object_id=product_id,
            )
        )


def _on_save(sender, instance: Product, created: bool, update_fields=None, **kwargs) -> None:
    # As the benchmark rule watches `stock`: the task's own save (the description) fires nothing.
    if created or not instance.name.startswith(HANDWRITTEN_PREFIX):
        return
    if update_fields is not None and "stock" not in update_fields:
        return
    args = (instance.pk, instance.organization_id, next(_event_ids))
    transaction.on_commit(lambda: handwritten_run(*args))


post_save.connect(_on_save, sender=Product, dispatch_uid="bench.handwritten")
