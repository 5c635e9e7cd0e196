"""Drill: one big field value must not grow the database by megabytes (issue 17, item 5).

A 60 KB product description and three ordinary rules: on update, notify three members with the
description, and create three copies of the product; on create, update the new product (which
fires the update rules again). Every run used to keep the 60 KB snapshot (and its changes),
every record action wrote it again and kept it in its result, every notification copied it:
the one write stored 19 MB of rows (22.8 MB of database growth on PostgreSQL), cut only by the
chain depth. The bytes runs store are now counted against byte budgets per run tree and per
organization and minute, and a storage quota; what goes over is a FAILED run or action naming
the setting.

Stored bytes are counted as the rows' JSON text (deterministic, unlike file sizes).
"""

import json
import random
import string

import pytest
import time_machine

from accounts.choices import Role
from accounts.models import Notification
from automation.core.choices import ActionType, RunStatus, TriggerEvent
from automation.core.models import AutomationLog
from automation.fanout import budget
from automation.runs.create import OMITTED_KEY
from automation.runs.manual import RunConflict, retry_run
from automation.runs.retention import purge_logs
from catalog.models import Product
from tests.drills.test_fan_out_budget import run_everything
from tests.factories import AutomationRuleFactory, ProductFactory

pytestmark = pytest.mark.django_db

VALUE_BYTES = 60_000


def big_value(seed=0) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(string.ascii_letters) for _ in range(VALUE_BYTES))


def stored_bytes() -> int:
    """What the runs' rows hold: logs, notifications, product descriptions."""
    total = 0
    for log in AutomationLog.objects.all():
        fields = (log.context, log.changes, log.action_logs, log.condition_trace)
        total += sum(len(json.dumps(value).encode()) for value in fields) + len(log.error)
    for notification in Notification.objects.all():
        total += len(notification.title.encode()) + len(notification.body.encode())
    return total + sum(len(p.description.encode()) for p in Product.objects.all())


def amplifying_rules(organization, make_member):
    for role in (Role.ADMIN, Role.EDITOR, Role.VIEWER):
        make_member(organization, role)
    notify = {
        "action_type": ActionType.SEND_NOTIFICATION,
        "parameters": {
            "recipients": {"roles": ["ADMIN", "EDITOR", "VIEWER"]},
            "title": "Changed {{ object.name }}",
            "body": "{{ object.description }}",
        },
    }
    copies = [
        {
            "action_type": ActionType.CREATE_RECORD,
            "parameters": {
                "model": "catalog.product",
                "fields": {
                    "name": f"copy {number} of {{{{ object.name }}}}",
                    "description": "{{ object.description }}",
                },
            },
        }
        for number in range(3)
    ]
    touch = {"action_type": ActionType.UPDATE_RECORD, "parameters": {"fields": {"stock": 1}}}
    AutomationRuleFactory(organization=organization, actions=[notify])
    AutomationRuleFactory(organization=organization, actions=copies)
    AutomationRuleFactory(
        organization=organization, trigger_event=TriggerEvent.CREATED, actions=[touch]
    )


def write_big_value(product, seed=0) -> None:
    product.description = big_value(seed)
    product.save()


def test_one_big_write_stores_at_most_its_tree_byte_budget(organization, make_member, settings):
    settings.AUTOMATION_MAX_BYTES_PER_ROOT = 4 * 1024 * 1024  # the default
    product = ProductFactory(organization=organization, name="seed")
    amplifying_rules(organization, make_member)

    write_big_value(product)
    run_everything(max_runs=1000)

    # Two roots (the notifying rule's, the copying rule's); a root's own log is not counted in
    # its tree. The copying tree is the one that multiplies.
    roots = AutomationLog.objects.filter(depth=0)
    assert roots.count() == 2
    roots_size = sum(budget.stored_size(root.context, root.changes) for root in roots)
    per_root = settings.AUTOMATION_MAX_BYTES_PER_ROOT
    # The copying tree's budget, the notifying tree (3 notifications), the roots' own logs, and
    # the small rows of refused runs and actions. It used to be 19 MB.
    bound = per_root + 3 * VALUE_BYTES + roots_size + 200_000
    assert stored_bytes() < bound, (stored_bytes(), bound)
    message = f"({per_root} bytes, AUTOMATION_MAX_BYTES_PER_ROOT)"
    refused = AutomationLog.objects.filter(error__contains=message)
    assert refused.exists()
    assert {log.status for log in refused} == {RunStatus.FAILED}
    for log in AutomationLog.objects.filter(context__has_key=OMITTED_KEY):
        assert log.context["object"] is None and log.changes is None


def test_the_organization_byte_budget_per_minute_refuses_the_next_run(
    organization, make_member, settings
):
    """Runs started by separate writes each start a tree: the minute's budget holds them all.
    A refused run keeps no snapshot, and cannot be retried (it has nothing to retry with)."""
    settings.AUTOMATION_MAX_BYTES_PER_MINUTE = 3 * VALUE_BYTES
    rule = AutomationRuleFactory(
        organization=organization,
        actions=[{"action_type": ActionType.UPDATE_RECORD, "parameters": {"fields": {"stock": 2}}}],
    )
    product = ProductFactory(organization=organization)
    with time_machine.travel("2026-12-02 09:15:10Z", tick=False):
        write_big_value(product, seed=1)  # snapshot and changes: two copies
        write_big_value(product, seed=2)
    first, second = AutomationLog.objects.filter(rule=rule).order_by("id")
    assert first.status == RunStatus.PENDING
    assert second.status == RunStatus.FAILED
    assert second.error == (
        f"Byte budget of the organization reached ({3 * VALUE_BYTES} bytes in the minute from "
        "09:15 UTC, AUTOMATION_MAX_BYTES_PER_MINUTE); not run, its snapshot not stored. "
        "It resets at 09:16:00 UTC."
    )
    assert second.context == {"object": None, OMITTED_KEY: True} and second.changes is None
    with pytest.raises(RunConflict, match="kept no snapshot"):
        retry_run(second)


def test_the_storage_quota_counts_what_is_stored_and_retention_frees_it(
    organization, other_organization, settings
):
    """The quota's counter starts from a measure of the stored logs (not a SUM per run), grows
    with each count, and is measured again once retention has deleted logs."""
    import datetime

    from django.utils import timezone

    settings.AUTOMATION_STORAGE_QUOTA_BYTES = 3 * VALUE_BYTES
    rule = AutomationRuleFactory(organization=organization)
    old = AutomationLog.objects.create(
        organization=organization,
        rule=rule,
        trigger="EVENT",
        status=RunStatus.SUCCEEDED,
        context={"object": {"description": big_value(3), "name": big_value(6)}},
    )
    AutomationLog.objects.filter(pk=old.pk).update(
        created_at=timezone.now() - datetime.timedelta(days=400)
    )
    product = ProductFactory(organization=organization)
    write_big_value(product, seed=4)  # the stored log and this snapshot: over the quota
    (refused,) = AutomationLog.objects.filter(rule=rule, object_id=str(product.pk))
    assert refused.status == RunStatus.FAILED
    assert "AUTOMATION_STORAGE_QUOTA_BYTES" in refused.error
    assert refused.error.startswith("Storage quota of the organization reached (about ")

    other_rule = AutomationRuleFactory(organization=other_organization)
    other_product = ProductFactory(organization=other_organization)
    write_big_value(other_product, seed=5)
    assert AutomationLog.objects.get(rule=other_rule).status == RunStatus.PENDING

    AutomationLog.objects.filter(pk=refused.pk).update(
        created_at=timezone.now() - datetime.timedelta(days=400)
    )
    purge_logs()
    assert not AutomationLog.objects.filter(rule=rule).exists()
    product.stock = 9
    product.save()  # a small change: the quota is measured again, and has room
    assert AutomationLog.objects.get(rule=rule).status == RunStatus.PENDING
