"""Drill: two scheduler processes tick the same minute against PostgreSQL; one log per slot.

Each process is a real `manage.py shell` calling automation.triggers.schedules.tick() with the same `now`,
released at the same instant, so both walk the same due rules at once: one takes a rule with
SELECT ... FOR UPDATE SKIP LOCKED, and the unique (rule, scheduled_for) constraint stops the other
from writing a slot it got to second. Rules without a model make one run per slot; rules with a
model fan out to one child per matching record, which must exist exactly once too.
"""

import datetime
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from automation.core.choices import MissedRunPolicy, RunStatus
from automation.core.models import AutomationLog, AutomationRule
from tests.drills.conftest import needs_postgres, size, test_database_url
from tests.factories import AutomationRuleFactory, ProductFactory, content_type_of

pytestmark = [needs_postgres, pytest.mark.django_db(transaction=True), pytest.mark.slow]

FAN_OUT_RULES = 5
RECORDS = 12

TICK = """
import json, sys, time, datetime
from django.utils import timezone
from automation.triggers import schedules
now = datetime.datetime.fromisoformat(sys.argv[1])
release = float(sys.argv[2])
while time.time() < release:
    time.sleep(0.001)
print(json.dumps(schedules.tick(now=now)))
"""


def start_scheduler(env, now, release):
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import django; django.setup()\n{TICK}",
            now.isoformat(),
            str(release),
        ],
        cwd=Path(settings.BASE_DIR),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_schedulers_ticking_the_same_minute_fire_each_slot_once(organization):
    plain_rules = size("scheduled_rules")
    slot = timezone.now().replace(second=0, microsecond=0) - datetime.timedelta(minutes=1)
    now = slot + datetime.timedelta(seconds=30)
    for number in range(plain_rules):
        AutomationRuleFactory(
            organization=organization,
            name=f"every minute {number}",
            schedule_rule=True,
            schedule="* * * * *",
            missed_run_policy=MissedRunPolicy.ALL,
        )
    for number in range(FAN_OUT_RULES):
        AutomationRuleFactory(
            organization=organization,
            name=f"per product {number}",
            schedule_rule=True,
            schedule="* * * * *",
            content_type=content_type_of("catalog.product"),
        )
    ProductFactory.create_batch(RECORDS, organization=organization)
    # Every rule is due at exactly `slot`: two schedulers will see the same work.
    AutomationRule.objects.filter(organization=organization).update(next_run_at=slot)

    queue = f"drill-schedulers-{uuid.uuid4().hex[:8]}"  # their enqueues land apart from the suite's
    env = {
        **os.environ,
        "DATABASE_URL": test_database_url(connection),
        "HUEY_NAME": queue,
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    release = time.time() + 3  # both have imported Django by then
    started = time.monotonic()
    schedulers = [start_scheduler(env, now, release) for _ in range(2)]
    outputs = [process.communicate(timeout=120) for process in schedulers]
    seconds = time.monotonic() - started
    _flush_queue(queue)
    for process, (_stdout, stderr) in zip(schedulers, outputs, strict=True):
        assert process.returncode == 0, stderr
    reports = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]

    total_rules = plain_rules + FAN_OUT_RULES
    slot_logs = AutomationLog.objects.filter(organization=organization, scheduled_for__isnull=False)
    per_slot = Counter(slot_logs.values_list("rule_id", "scheduled_for"))
    assert len(per_slot) == total_rules, "every rule's slot fired"
    assert set(per_slot.values()) == {1}, "no slot fired twice"
    assert set(slot_logs.values_list("scheduled_for", flat=True)) == {slot}
    children = AutomationLog.objects.filter(organization=organization, parent_log__isnull=False)
    per_record = Counter(children.values_list("rule_id", "object_id"))
    assert len(per_record) == FAN_OUT_RULES * RECORDS
    assert set(per_record.values()) == {1}, "no record's run was created twice"
    assert children.filter(status=RunStatus.PENDING).count() == FAN_OUT_RULES * RECORDS
    # Between them the two schedulers fired each rule once, and each advanced it.
    assert sum(report["rules"] for report in reports) == total_rules
    assert not AutomationRule.objects.filter(organization=organization, next_run_at__lte=now)
    print(
        f"\ntwo schedulers, {total_rules} due rules ({FAN_OUT_RULES} fanning out to {RECORDS} "
        f"records): rules fired {reports[0]['rules']} + {reports[1]['rules']}, "
        f"{len(per_slot)} slot logs, {len(per_record)} record runs, no duplicate; {seconds:.1f}s"
    )


def _flush_queue(name: str) -> None:
    if not settings.REDIS_URL:
        return
    from huey import RedisHuey

    RedisHuey(name, url=settings.REDIS_URL).flush()
