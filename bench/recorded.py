"""Benchmarks 5's and 10's references: hand-written pipelines plus the least record of a run.

What any engine keeping the contract's record of a run must do at the least, written by hand
with SQL compiled once: an update of a product whose name starts with RECORDED_PREFIX inserts a
PENDING run log in the write's own transaction and publishes its PENDING event; after the commit
a hand-written Huey task locks the log (SELECT ... FOR UPDATE SKIP LOCKED), publishes RUNNING,
checks the condition and updates the description as the benchmark rule does, writes the log's
outcome with a guarded UPDATE and publishes it: three log events, journaled and delivered through
the engine's publication path like a run's. Left out, because the engine does them and this
floor does not need them: the changes' old row, the fan-out budgets, the fair queue, the
condition trace, the plan and the action entries and their events, the metrics.

Benchmark 10's reference (`recorded_webhook`) is the same for a webhook: an update of a product
whose name starts with WEBHOOK_RECORDED_PREFIX inserts a PENDING log and publishes it; after the
commit a Huey task locks the log, writes and publishes RUNNING and commits (the call must be
known as possibly made before it is made), POSTs the product's id and stock to the URL in
BENCH_RECORDED_WEBHOOK_URL on one kept connection, then writes and publishes the outcome. Left
out besides: the conditions, the template, the signature, the address guard, the retries.

Imported only by the bench's server and workers (like bench/handwritten.py).
"""

import json
import os
import threading

import httpx
from django.db import connection, transaction
from django.db.models.signals import post_save
from django.utils import timezone
from huey.contrib.djhuey import db_task

from automation.core.choices import RunStatus
from automation.core.models import AutomationLog, AutomationRule
from automation.core.snapshots import json_value
from automation.live.events import publish_log_message
from automation.live.journal import LOG_MESSAGE
from bench.data import (
    RECORDED_PREFIX,
    WEBHOOK_RECORDED_PREFIX,
    WEBHOOK_RECORDED_RULE,
    WEBHOOK_RECORDED_URL,
)
from catalog.models import Product

_TABLE = AutomationLog._meta.db_table
_COLUMNS = [field for field in AutomationLog._meta.concrete_fields if not field.primary_key]


def _message(log: dict, rule: dict) -> dict:
    """The log event of `log` (the columns written), shaped as serialize_log shapes a run's."""
    payload = {name: json_value(value) for name, value in log.items()}
    payload["rule"] = rule
    return {"type": LOG_MESSAGE, "log": payload}


def _insert(values: dict) -> int:
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in _COLUMNS)
    marks = ", ".join(["%s"] * len(_COLUMNS))
    params = [
        field.get_db_prep_save(values.get(field.attname, field.get_default()), connection)
        for field in _COLUMNS
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {quote(_TABLE)} ({columns}) VALUES ({marks}) RETURNING {quote('id')}",
            params,
        )
        return cursor.fetchone()[0]


def _db(name: str, value):
    return AutomationLog._meta.get_field(name).get_db_prep_save(value, connection)


_rules: dict[
    tuple, AutomationRule
] = {}  # (organization, name) -> the rule (an engine has an index)


def _pending_log(instance: Product, rule_name: str) -> tuple[dict, dict]:
    """Insert `instance`'s PENDING log for the organization's rule `rule_name` and publish it:
    (the log's columns written, the rule's payload)."""
    key = (instance.organization_id, rule_name)
    rule = _rules.get(key)
    if rule is None:
        rule = _rules[key] = AutomationRule.objects.only("id", "name").get(
            organization_id=instance.organization_id, name=rule_name
        )
    now = timezone.now()
    log = {
        "organization_id": instance.organization_id,
        "rule_id": rule.pk,
        "trigger": "EVENT",
        "event": "UPDATED",
        "object_id": str(instance.pk),
        "status": RunStatus.PENDING,
        "seq": 0,
        "dry_run": False,
        "created_at": now,
        "updated_at": now,
    }
    log["id"] = _insert(log)
    rule_payload = {"id": rule.pk, "name": rule.name}
    publish_log_message(instance.organization_id, _message(log, rule_payload))
    return log, rule_payload


def _stock_changed(instance: Product, created: bool, update_fields, prefix: str) -> bool:
    # As the benchmark rules watch `stock`: the task's own save (the description) fires nothing.
    if created or not instance.name.startswith(prefix):
        return False
    return update_fields is None or "stock" in update_fields


def _on_save(sender, instance: Product, created: bool, update_fields=None, **kwargs) -> None:
    if not _stock_changed(instance, created, update_fields, RECORDED_PREFIX):
        return
    log, rule_payload = _pending_log(instance, RULE_NAME)
    args = (log["id"], instance.pk, instance.organization_id, rule_payload, log["created_at"])
    transaction.on_commit(lambda: recorded_run(*args))


RULE_NAME = "Restock note, recorded by hand (inactive)"


def _locked_seq(cursor, log_id: int) -> int | None:
    """Lock the log (SELECT ... FOR UPDATE SKIP LOCKED): its seq, None unless PENDING."""
    quote = connection.ops.quote_name
    lock = (
        " FOR UPDATE SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else ""
    )
    cursor.execute(f"SELECT status, seq FROM {quote(_TABLE)} WHERE id = %s{lock}", [log_id])
    row = cursor.fetchone()
    return row[1] if row is not None and row[0] == RunStatus.PENDING else None


def _write_state(cursor, log: dict, seq: int, *names: str) -> None:
    """The guarded UPDATE of `log`'s columns `names` (and its heartbeat)."""
    quote = connection.ops.quote_name
    columns = ", ".join(f"{quote(name)} = %s" for name in (*names, "heartbeat_at"))
    values = [_db(name, log[name]) for name in names] + [_db("heartbeat_at", timezone.now())]
    cursor.execute(
        f"UPDATE {quote(_TABLE)} SET {columns} WHERE id = %s AND seq = %s",
        [*values, log["id"], seq],
    )


@db_task()
def recorded_run(log_id: int, product_id: int, organization_id: int, rule: dict, created) -> None:
    """Claim the log, publish RUNNING, check and update, write and publish the outcome."""
    with transaction.atomic(), connection.cursor() as cursor:
        seq = _locked_seq(cursor, log_id)
        if seq is None:
            return
        log = {"id": log_id, "organization_id": organization_id, "created_at": created}
        log["dry_run"] = False
        log.update(status=RunStatus.RUNNING, seq=seq + 1, started_at=timezone.now())
        publish_log_message(organization_id, _message(log, rule))
        product = Product.objects.select_for_update().get(pk=product_id)
        met = product.status == "ACTIVE"
        if met:
            product.description = f"restocked to {product.stock}"
            product.save(update_fields=["description", "updated_at", "updated_by"])
        log.update(
            status=RunStatus.SUCCEEDED if met else RunStatus.SKIPPED,
            seq=seq + 2,
            finished_at=timezone.now(),
            conditions_met=met,
        )
        names = ("status", "seq", "conditions_met", "started_at", "finished_at")
        _write_state(cursor, log, seq, *names)
        publish_log_message(organization_id, _message(log, rule))


post_save.connect(_on_save, sender=Product, dispatch_uid="bench.recorded")


# --- Benchmark 10's reference: the least webhook run with a record -----------------------------

_local = threading.local()


def _on_webhook_save(sender, instance: Product, created: bool, update_fields=None, **kw) -> None:
    url = os.environ.get(WEBHOOK_RECORDED_URL)
    if not url or not _stock_changed(instance, created, update_fields, WEBHOOK_RECORDED_PREFIX):
        return
    log, rule_payload = _pending_log(instance, WEBHOOK_RECORDED_RULE)
    body = json.dumps({"product": str(instance.pk), "stock": str(instance.stock)})
    args = (log["id"], instance.organization_id, rule_payload, log["created_at"], url, body)
    transaction.on_commit(lambda: recorded_webhook(*args))


def _client() -> httpx.Client:
    """This thread's client: one kept connection to the receiver, as the engine keeps one."""
    client = getattr(_local, "client", None)
    if client is None:
        client = _local.client = httpx.Client(timeout=10)
    return client


@db_task()
def recorded_webhook(log_id: int, organization_id: int, rule: dict, created, url, body) -> None:
    """Claim the log and commit RUNNING, POST, then write and publish the outcome."""
    log = {"id": log_id, "organization_id": organization_id, "created_at": created}
    with transaction.atomic(), connection.cursor() as cursor:
        seq = _locked_seq(cursor, log_id)
        if seq is None:
            return
        log.update(dry_run=False, status=RunStatus.RUNNING, seq=seq + 1, started_at=timezone.now())
        _write_state(cursor, log, seq, "status", "seq", "started_at")
        publish_log_message(organization_id, _message(log, rule))
    response = _client().post(url, content=body, headers={"Content-Type": "application/json"})
    log.update(
        status=RunStatus.SUCCEEDED if response.is_success else RunStatus.FAILED,
        seq=seq + 2,
        finished_at=timezone.now(),
    )
    with transaction.atomic(), connection.cursor() as cursor:
        _write_state(cursor, log, seq + 1, "status", "seq", "finished_at")
        publish_log_message(organization_id, _message(log, rule))


post_save.connect(_on_webhook_save, sender=Product, dispatch_uid="bench.recorded.webhook")
