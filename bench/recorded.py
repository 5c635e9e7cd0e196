"""Benchmark 5's reference: the hand-written pipeline plus the least record of a run.

What any engine keeping the contract's record of a run must do at the least, written by hand
with SQL compiled once: an update of a product whose name starts with RECORDED_PREFIX inserts a
PENDING run log in the write's own transaction and publishes its PENDING event; after the commit
a hand-written Huey task locks the log (SELECT ... FOR UPDATE SKIP LOCKED), publishes RUNNING,
checks the condition and updates the description as the benchmark rule does, writes the log's
outcome with a guarded UPDATE and publishes it: three log events, journaled and delivered through
the engine's publication path like a run's. Left out, because the engine does them and this
floor does not need them: the changes' old row, the fan-out budgets, the fair queue, the
condition trace, the plan and the action entries and their events, the metrics.

Imported only by the bench's server and workers (like bench/handwritten.py).
"""

from django.db import connection, transaction
from django.db.models.signals import post_save
from django.utils import timezone
from huey.contrib.djhuey import db_task

from automation.core.choices import RunStatus
from automation.core.models import AutomationLog, AutomationRule
from automation.core.snapshots import json_value
from automation.live.events import publish_log_message
from automation.live.journal import LOG_MESSAGE
from bench.data import RECORDED_PREFIX
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


_rules: dict[int, AutomationRule] = {}  # organization -> its rule (an engine has an index)


def _on_save(sender, instance: Product, created: bool, update_fields=None, **kwargs) -> None:
    # As the benchmark rule watches `stock`: the task's own save (the description) fires nothing.
    if created or not instance.name.startswith(RECORDED_PREFIX):
        return
    if update_fields is not None and "stock" not in update_fields:
        return
    rule = _rules.get(instance.organization_id)
    if rule is None:
        rule = _rules[instance.organization_id] = AutomationRule.objects.only("id", "name").get(
            organization_id=instance.organization_id, name=RULE_NAME
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
    args = (log["id"], instance.pk, instance.organization_id, rule_payload, now)
    transaction.on_commit(lambda: recorded_run(*args))


RULE_NAME = "Restock note, recorded by hand (inactive)"


@db_task()
def recorded_run(log_id: int, product_id: int, organization_id: int, rule: dict, created) -> None:
    """Claim the log, publish RUNNING, check and update, write and publish the outcome."""
    quote = connection.ops.quote_name
    lock = (
        " FOR UPDATE SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else ""
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SELECT status, seq FROM {quote(_TABLE)} WHERE id = %s{lock}", [log_id])
        row = cursor.fetchone()
        if row is None or row[0] != RunStatus.PENDING:
            return
        seq = row[1]
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
        cursor.execute(
            f"UPDATE {quote(_TABLE)} SET status = %s, seq = %s, conditions_met = %s, "
            "started_at = %s, finished_at = %s, heartbeat_at = %s WHERE id = %s AND seq = %s",
            [
                log["status"],
                log["seq"],
                met,
                _db("started_at", log["started_at"]),
                _db("finished_at", log["finished_at"]),
                _db("heartbeat_at", log["finished_at"]),
                log_id,
                seq,
            ],
        )
        publish_log_message(organization_id, _message(log, rule))


post_save.connect(_on_save, sender=Product, dispatch_uid="bench.recorded")
