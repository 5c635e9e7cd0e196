"""Schedules: next_run_at across DST, upkeep on edit/pause/resume, the tick (time travel)."""

import datetime

import pytest
import time_machine
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from automation.core.choices import ActionType, MissedRunPolicy, RunStatus, TriggerType
from automation.core.models import AutomationLog, AutomationRule
from automation.rules import services
from automation.runs.execute import execute_run
from automation.triggers.fire_times import upcoming_runs
from automation.triggers.schedules import fire_now, tick
from tests import blocking
from tests.factories import (
    AutomationRuleFactory,
    CategoryFactory,
    ProductFactory,
    content_type_of,
)

pytestmark = pytest.mark.django_db

UTC = datetime.UTC
NEW_YORK = "America/New_York"


def at(*parts):
    return datetime.datetime(*parts, tzinfo=UTC)


def travel(moment):
    return time_machine.travel(moment, tick=False)


def schedule_rule(organization, schedule="0 * * * *", tz="UTC", **kwargs):
    return AutomationRuleFactory(
        organization=organization, schedule_rule=True, schedule=schedule, timezone=tz, **kwargs
    )


def slots_of(rule):
    return list(
        AutomationLog.objects.filter(rule=rule, scheduled_for__isnull=False)
        .order_by("scheduled_for")
        .values_list("scheduled_for", flat=True)
    )


def stored(rule):
    rule.refresh_from_db()
    return rule


# --- next_run_at ---------------------------------------------------------------------------------


def test_next_run_at_is_set_on_creation_in_the_rules_time_zone(organization):
    with travel(at(2026, 1, 5, 10, 7)):
        hourly = schedule_rule(organization)
        paris = schedule_rule(organization, "0 9 * * *", "Europe/Paris")
        service_made = services.create_rule(
            organization,
            {"name": "Nightly", "trigger_type": "SCHEDULE", "schedule": "0 2 * * *"},
        )
    assert stored(hourly).next_run_at == at(2026, 1, 5, 11, 0)
    assert stored(paris).next_run_at == at(2026, 1, 6, 8, 0)  # 09:00 CET
    assert stored(service_made).next_run_at == at(2026, 1, 6, 2, 0)


def test_spring_forward_wall_time_fires_at_the_first_instant_after_the_gap(organization):
    # 2026-03-08 02:30 does not exist in New York: clocks go from 02:00 EST to 03:00 EDT.
    with travel(at(2026, 3, 7, 12, 0)):
        rule = schedule_rule(organization, "30 2 * * *", NEW_YORK)
    assert stored(rule).next_run_at == at(2026, 3, 8, 7, 0)  # 03:00 EDT

    with travel(at(2026, 3, 8, 7, 0, 5)):
        tick()
    assert slots_of(rule) == [at(2026, 3, 8, 7, 0)]
    assert stored(rule).next_run_at == at(2026, 3, 9, 6, 30)  # 02:30 EDT the next day


def test_fall_back_wall_time_fires_once_at_its_first_occurrence(organization):
    # 2026-11-01 01:30 happens twice in New York (EDT, then EST an hour later).
    with travel(at(2026, 10, 31, 12, 0)):
        rule = schedule_rule(organization, "30 1 * * *", NEW_YORK)
    assert stored(rule).next_run_at == at(2026, 11, 1, 5, 30)  # 01:30 EDT

    with travel(at(2026, 11, 1, 5, 30, 10)):
        tick()
    assert stored(rule).next_run_at == at(2026, 11, 2, 6, 30)  # not 01:30 EST the same day
    with travel(at(2026, 11, 1, 6, 30, 10)):  # the second 01:30
        tick()
    assert slots_of(rule) == [at(2026, 11, 1, 5, 30)]


def test_upcoming_runs_across_dst_and_bounds(organization):
    with travel(at(2026, 10, 31, 12, 0)):
        rule = schedule_rule(organization, "30 1 * * *", NEW_YORK)
        assert upcoming_runs(rule, 3) == [
            at(2026, 11, 1, 5, 30),
            at(2026, 11, 2, 6, 30),
            at(2026, 11, 3, 6, 30),
        ]
        with pytest.raises(ValueError, match="between 1 and 50"):
            upcoming_runs(rule, 51)
        rule.is_active = False
        assert upcoming_runs(rule, 3) == []


def test_edit_pause_resume_and_delete_keep_next_run_at_right(organization):
    with travel(at(2026, 1, 5, 10, 7)):
        rule = schedule_rule(organization)
        assert stored(rule).next_run_at == at(2026, 1, 5, 11, 0)
        rule.schedule = "30 * * * *"
        rule.save()
        assert stored(rule).next_run_at == at(2026, 1, 5, 10, 30)
        rule.timezone = "Asia/Kolkata"  # +05:30: "30 * * * *" there is :00 in UTC
        rule.save()
        assert stored(rule).next_run_at == at(2026, 1, 5, 11, 0)
        rule.is_active = False
        rule.save()
        assert stored(rule).next_run_at is None

    with travel(at(2026, 1, 5, 15, 20)):  # resumed later: slots passed while paused are gone
        rule.is_active = True
        rule.save()
        assert stored(rule).next_run_at == at(2026, 1, 5, 16, 0)
        services.delete_rule(rule)  # saves with update_fields
        assert stored(rule).next_run_at is None


def test_an_unrelated_edit_with_a_stale_instance_keeps_the_schedulers_values(organization):
    with travel(at(2026, 1, 5, 10, 7)):
        rule = schedule_rule(organization)
    loaded_before_the_tick = AutomationRule.objects.get(pk=rule.pk)
    with travel(at(2026, 1, 5, 11, 0, 3)):
        tick()
        loaded_before_the_tick.name = "Renamed"
        loaded_before_the_tick.save()
    rule = stored(rule)
    assert rule.name == "Renamed"
    assert rule.next_run_at == at(2026, 1, 5, 12, 0)
    assert rule.last_run_at == at(2026, 1, 5, 11, 0)


# --- The tick ---------------------------------------------------------------------------------------


def test_tick_fires_a_due_rule_once_and_not_a_rule_not_yet_due(organization):
    with travel(at(2026, 1, 5, 10, 7)):
        hourly = schedule_rule(organization)
        daily = schedule_rule(organization, "0 6 * * *")
    with travel(at(2026, 1, 5, 10, 59, 59)):
        assert tick() == {"rules": 0, "runs": 0}
    assert AutomationLog.objects.count() == 0

    with travel(at(2026, 1, 5, 11, 0, 2)):
        tick()
    (log,) = AutomationLog.objects.filter(rule=hourly)
    assert log.status == RunStatus.PENDING
    assert log.trigger == TriggerType.SCHEDULE
    assert log.scheduled_for == at(2026, 1, 5, 11, 0)
    assert log.object_id is None and log.content_type is None
    hourly = stored(hourly)
    assert hourly.next_run_at == at(2026, 1, 5, 12, 0)
    assert hourly.last_run_at == at(2026, 1, 5, 11, 0)
    assert slots_of(daily) == []

    execute_run(log.pk)
    log.refresh_from_db()
    assert log.status == RunStatus.SUCCEEDED


def test_two_ticks_for_the_same_minute_make_one_log_per_slot(organization):
    with travel(at(2026, 1, 5, 10, 7)):
        rule = schedule_rule(organization)
    with travel(at(2026, 1, 5, 11, 0, 1)):
        tick()
        tick()
        assert slots_of(rule) == [at(2026, 1, 5, 11, 0)]
        # A second scheduler that read the rule before the first advanced it: the slot's
        # insert hits the unique constraint inside a savepoint and the slot is skipped.
        AutomationRule.objects.filter(pk=rule.pk).update(next_run_at=at(2026, 1, 5, 11, 0))
        assert tick() == {"rules": 1, "runs": 0}
    assert slots_of(rule) == [at(2026, 1, 5, 11, 0)]
    assert stored(rule).next_run_at == at(2026, 1, 5, 12, 0)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (MissedRunPolicy.LATEST, [at(2026, 1, 5, 13, 0)]),
        (MissedRunPolicy.SKIP, []),
        (
            MissedRunPolicy.ALL,
            [
                at(2026, 1, 5, 10, 0),
                at(2026, 1, 5, 11, 0),
                at(2026, 1, 5, 12, 0),
                at(2026, 1, 5, 13, 0),
            ],
        ),
    ],
)
def test_missed_slots_after_downtime_follow_the_policy(organization, policy, expected):
    with travel(at(2026, 1, 5, 9, 7)):
        rule = schedule_rule(organization, missed_run_policy=policy)
    with travel(at(2026, 1, 5, 13, 30)):  # down from 09:07 to 13:30
        tick()
    assert slots_of(rule) == expected
    rule = stored(rule)
    assert rule.next_run_at == at(2026, 1, 5, 14, 0)
    assert rule.last_run_at == (expected[-1] if expected else None)


def test_skip_policy_still_runs_an_on_time_slot(organization):
    with travel(at(2026, 1, 5, 9, 7)):
        rule = schedule_rule(organization, missed_run_policy=MissedRunPolicy.SKIP)
    with travel(at(2026, 1, 5, 10, 0, 40)):
        tick()
    assert slots_of(rule) == [at(2026, 1, 5, 10, 0)]


def test_skip_policy_grace_is_a_setting(organization, settings):
    settings.AUTOMATION_SCHEDULE_GRACE_SECONDS = 3600
    with travel(at(2026, 1, 5, 9, 7)):
        rule = schedule_rule(organization, missed_run_policy=MissedRunPolicy.SKIP)
    with travel(at(2026, 1, 5, 10, 30)):  # 30 minutes late: within an hour's grace
        tick()
    assert slots_of(rule) == [at(2026, 1, 5, 10, 0)]


def test_all_policy_is_bounded_to_the_latest_slots(organization, settings):
    settings.AUTOMATION_MISSED_RUNS_MAX = 2
    with travel(at(2026, 1, 5, 9, 7)):
        rule = schedule_rule(organization, missed_run_policy=MissedRunPolicy.ALL)
    with travel(at(2026, 1, 5, 13, 30)):
        tick()
    assert slots_of(rule) == [at(2026, 1, 5, 12, 0), at(2026, 1, 5, 13, 0)]


def test_tick_cost_grows_with_due_rules_not_all_rules(organization, settings):
    # Off: the quota's first count measures the organization's storage (two SUMs, once an hour),
    # which would land in one tick or the other (tests/drills/test_storage_amplification.py).
    settings.AUTOMATION_STORAGE_QUOTA_BYTES = 0
    with travel(at(2026, 1, 5, 10, 7)):
        schedule_rule(organization, name="due")
        schedule_rule(organization, "0 6 * * *", name="idle 0")
    with travel(at(2026, 1, 5, 11, 0, 1)), CaptureQueriesContext(connection) as few:
        tick()

    AutomationLog.objects.all().delete()
    with travel(at(2026, 1, 5, 11, 7)):
        for index in range(1, 40):
            schedule_rule(organization, "0 6 * * *", name=f"idle {index}")
    AutomationRule.objects.filter(name="due").update(next_run_at=at(2026, 1, 5, 12, 0))
    with travel(at(2026, 1, 5, 12, 0, 1)), CaptureQueriesContext(connection) as many:
        tick()
    assert AutomationLog.objects.count() == 1
    assert len(many.captured_queries) == len(few.captured_queries)


# --- Schedules with a model: one run per matching record ------------------------------------------


def product_schedule(organization, **kwargs):
    return schedule_rule(
        organization,
        "0 8 * * *",
        content_type=content_type_of("catalog.product"),
        conditions=[{"field_name": "status", "operator": "EQUALS", "value": "ACTIVE"}],
        actions=[
            {
                "action_type": ActionType.UPDATE_RECORD,
                "parameters": {"fields": {"description": "Checked {{ object.name }}"}},
            }
        ],
        **kwargs,
    )


def test_a_schedule_with_a_model_runs_once_per_matching_record(organization, other_organization):
    active = [ProductFactory(organization=organization, status="ACTIVE") for _ in range(3)]
    ProductFactory(organization=organization, status="DRAFT")
    ProductFactory(organization=other_organization, status="ACTIVE")
    with travel(at(2026, 1, 5, 7, 0)):
        rule = product_schedule(organization)
    with travel(at(2026, 1, 5, 8, 0, 5)):
        assert tick() == {"rules": 1, "runs": 3}

    (slot_log,) = AutomationLog.objects.filter(rule=rule, scheduled_for__isnull=False)
    assert slot_log.scheduled_for == at(2026, 1, 5, 8, 0)
    assert slot_log.status == RunStatus.SUCCEEDED
    assert slot_log.context["records_matched"] == 3
    assert slot_log.context["truncated"] is False
    children = list(AutomationLog.objects.filter(parent_log=slot_log).order_by("object_id"))
    assert sorted(int(log.object_id) for log in children) == sorted(p.pk for p in active)
    assert {log.status for log in children} == {RunStatus.PENDING}
    assert {log.root_log_id for log in children} == {slot_log.pk}

    for log in children:
        execute_run(log.pk)
        log.refresh_from_db()
        assert log.status == RunStatus.SUCCEEDED
    for product in active:
        product.refresh_from_db()
        assert product.description == f"Checked {product.name}"


def test_the_record_bound_cuts_a_slot_short_and_says_so(organization, settings):
    settings.AUTOMATION_SCHEDULE_MAX_RECORDS = 2
    for _ in range(3):
        ProductFactory(organization=organization, status="ACTIVE")
    with travel(at(2026, 1, 5, 7, 0)):
        rule = product_schedule(organization)
    with travel(at(2026, 1, 5, 8, 0, 5)):
        tick()
    (slot_log,) = AutomationLog.objects.filter(rule=rule, scheduled_for__isnull=False)
    assert slot_log.context["truncated"] is True
    assert "Stopped after 2 records" in slot_log.error
    assert AutomationLog.objects.filter(parent_log=slot_log).count() == 2


def test_a_slot_where_no_record_matches_is_skipped(organization):
    ProductFactory(organization=organization, status="DRAFT")
    with travel(at(2026, 1, 5, 7, 0)):
        rule = product_schedule(organization)
    with travel(at(2026, 1, 5, 8, 0, 5)):
        tick()
    (slot_log,) = AutomationLog.objects.filter(rule=rule)
    assert slot_log.status == RunStatus.SKIPPED
    assert "No record met the conditions" in slot_log.error


@pytest.mark.django_db(transaction=True)
def test_a_tick_evaluating_records_does_not_hold_other_organizations_writes(
    organization, other_organization, monkeypatch
):
    """The records a slot fans out to are found before the rule's transaction opens: on SQLite
    that transaction holds the write lock, and evaluating up to 1,000 records inside it stopped
    every other writer meanwhile."""
    ProductFactory(organization=organization, status="ACTIVE")
    with travel(at(2026, 1, 5, 7, 0)):
        rule = product_schedule(organization)
    parked = blocking.BlockedEvaluation(monkeypatch)
    ticking = blocking.start(lambda: tick(now=at(2026, 1, 5, 8, 0, 5)))
    try:
        assert parked.entered.wait(timeout=30), "the tick never evaluated a record"

        def other_write():
            with transaction.atomic():
                return CategoryFactory(organization=other_organization, name="Elsewhere").pk

        write = blocking.start(other_write)
        committed_meanwhile = write.finished_within(10)
    finally:
        parked.release.set()
    assert committed_meanwhile, "the other organization's write waited for the tick"
    assert write.error is None, write.error
    assert ticking.finished_within(30) and ticking.error is None, ticking.error
    assert ticking.result == {"rules": 1, "runs": 1}
    assert AutomationLog.objects.filter(rule=rule, parent_log__isnull=False).count() == 1


def test_a_rule_edited_while_its_slot_was_prepared_is_prepared_again(organization, monkeypatch):
    """The records were found with the conditions as read; an edit committed before the rule is
    locked makes the tick find them again with the new conditions."""
    from automation.triggers import schedules

    ProductFactory(organization=organization, status="ACTIVE")
    draft = ProductFactory(organization=organization, status="DRAFT")
    with travel(at(2026, 1, 5, 7, 0)):
        rule = product_schedule(organization)
    found = []
    real = schedules._matching_records

    def matching_records(rule, now):
        found.append(rule.revision)
        matches = real(rule, now)
        if len(found) == 1:  # an editor saves the rule meanwhile: DRAFT products now
            rule.conditions.update(value="DRAFT")
            AutomationRule.objects.filter(pk=rule.pk).update(revision=rule.revision + 1)
        return matches

    monkeypatch.setattr(schedules, "_matching_records", matching_records)
    assert tick(now=at(2026, 1, 5, 8, 0, 5)) == {"rules": 1, "runs": 1}
    assert found == [rule.revision, rule.revision + 1]
    (child,) = AutomationLog.objects.filter(rule=rule, parent_log__isnull=False)
    assert child.object_id == str(draft.pk)


# --- Firing a schedule by hand ------------------------------------------------------------------


def test_firing_by_hand_takes_no_slot_and_leaves_the_schedule_alone(organization, editor):
    with travel(at(2026, 1, 5, 10, 7)):
        rule = schedule_rule(organization)
    with travel(at(2026, 1, 5, 10, 30)):
        first = fire_now(rule, user=editor)
        second = fire_now(rule, user=editor)  # again: no slot to collide on
    for log in (first, second):
        assert (log.status, log.trigger, log.scheduled_for) == (
            RunStatus.PENDING,
            TriggerType.MANUAL,
            None,
        )
        assert log.triggered_by_id == editor.pk
        assert log.context["scheduled_for"] is None
    rule = stored(rule)
    assert (rule.next_run_at, rule.last_run_at) == (at(2026, 1, 5, 11, 0), None)

    # The slot of 11:00 still fires, once, from the tick.
    with travel(at(2026, 1, 5, 11, 0, 2)):
        assert tick() == {"rules": 1, "runs": 1}
    assert slots_of(rule) == [at(2026, 1, 5, 11, 0)]
    execute_run(first.pk)
    first.refresh_from_db()
    assert first.status == RunStatus.SUCCEEDED


def test_firing_a_rule_with_a_model_by_hand_fans_out_as_a_slot_does(
    organization, other_organization, editor, settings
):
    settings.AUTOMATION_SCHEDULE_MAX_RECORDS = 3
    active = [ProductFactory(organization=organization, status="ACTIVE") for _ in range(4)]
    ProductFactory(organization=organization, status="DRAFT")
    ProductFactory(organization=other_organization, status="ACTIVE")
    with travel(at(2026, 1, 5, 7, 0)):
        rule = product_schedule(organization)
    services.update_rule(rule, {"is_active": False})  # paused: fired by hand all the same
    with travel(at(2026, 1, 5, 7, 30)):
        fan_out = fire_now(rule, user=editor)
    assert (fan_out.status, fan_out.trigger, fan_out.scheduled_for) == (
        RunStatus.SUCCEEDED,
        TriggerType.MANUAL,
        None,
    )
    assert fan_out.context["records_examined"] == 3
    assert fan_out.context["records_matched"] == 3
    assert fan_out.context["truncated"] is True
    assert "Stopped after 3 records (AUTOMATION_SCHEDULE_MAX_RECORDS)" in fan_out.error
    children = list(AutomationLog.objects.filter(parent_log=fan_out).order_by("pk"))
    assert [int(log.object_id) for log in children] == [p.pk for p in active[:3]]
    assert {(log.status, log.trigger, log.root_log_id) for log in children} == {
        (RunStatus.PENDING, TriggerType.MANUAL, fan_out.pk)
    }
    assert {log.triggered_by_id for log in children} == {editor.pk}
    for log in children:
        execute_run(log.pk)
        log.refresh_from_db()
        assert log.status == RunStatus.SUCCEEDED, log.error
    rule = stored(rule)
    assert (rule.next_run_at, rule.last_run_at) == (None, None)  # paused, and still paused
    assert slots_of(rule) == []


def test_firing_by_hand_within_a_budget_stops_where_the_time_ran_out(organization):
    ProductFactory(organization=organization, status="ACTIVE")
    rule = product_schedule(organization)
    fan_out = fire_now(rule, budget=0)
    assert (fan_out.status, fan_out.context["records_examined"]) == (RunStatus.SKIPPED, 0)
    assert fan_out.context["truncated"] is True
    assert fan_out.error.startswith("Stopped after 0 records: a firing by hand")
    assert "AUTOMATION_DRY_RUN_BUDGET_SECONDS" in fan_out.error
    assert not AutomationLog.objects.filter(parent_log=fan_out).exists()


def test_only_schedule_rules_are_fired_by_hand(organization):
    from django.core.exceptions import ValidationError

    rule = AutomationRuleFactory(organization=organization, manual_rule=True)
    with pytest.raises(ValidationError) as refused:
        fire_now(rule)
    assert "Run it with runRule" in refused.value.message_dict["id"][0]
    assert not AutomationLog.objects.exists()


def test_the_tick_runs_every_minute_and_retention_every_hour():
    from huey.contrib.djhuey import HUEY

    import automation.tasks  # noqa: F401 - registers the periodic tasks

    def periodic_at(minute):
        moment = datetime.datetime(2026, 1, 5, 10, minute)
        return {task.name for task in HUEY.read_periodic(moment)}

    for minute in (0, 1, 37, 59):
        assert "schedule_tick_task" in periodic_at(minute)
    assert "purge_logs_task" in periodic_at(17)
    assert "purge_logs_task" not in periodic_at(18)
