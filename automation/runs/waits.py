"""Durable waits: a run that holds (its rule's holdFor) or reaches a WAIT action is stored WAITING
with its due time, and goes on from there when it is woken (runs/wakeups.py).

A waiting run is a row, not a sleeping worker or a task scheduled in the queue: the worker that
paused it commits WAITING with `resume_at` and is free at once; nothing of the run lives in any
process or in the broker meanwhile, so a restart, a kill -9 or a lost queue loses nothing. When
it is due, one conditional UPDATE (WAITING -> PENDING, seq + 1) lets exactly one waker put it back
in its organization's queue, where it is claimed like any PENDING run and resumed where it
stopped: the run's state says where (docs/design.md, "Durable waits").

- **holdFor**: the conditions were met; the run records the hold (`log.hold`) and waits. Woken,
  it is a PENDING run with an unchecked hold: its conditions are evaluated again (execute.py)
  against the record as it is then (`recheck`), and the actions run only if they still hold,
  else it ends SKIPPED saying so. A write that broke the conditions meanwhile cancels nothing:
  the re-check sees it.
- **WAIT**: the action's entry is WAITING with its due time in its result; woken, the run's plan
  resumes at that entry (plan.py), which then SUCCEEDS, and goes on with the next action.

Dry runs never wait: the hold and the WAIT say what a real run would do.
"""

import datetime

from django.db import transaction
from django.utils import timezone

from automation.core.choices import RunStatus, TriggerEvent
from automation.core.durations import iso_duration
from automation.core.models import AutomationLog
from automation.core.registry import get_automatable
from automation.core.snapshots import diff, snapshot


def iso(instant: datetime.datetime) -> str:
    return instant.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


def pause(writer, due: datetime.datetime, *fields: str) -> None:
    """Store the run WAITING until `due` (in the writer's transaction), with the other
    `fields` it changed, as one state change; once that commits, the run is woken at `due`
    (runs/wakeups.py), by a hint to the queue or by the tick."""
    from automation.runs.wakeups import schedule_wakeup

    log = writer.log
    log.status = RunStatus.WAITING
    log.resume_at = due
    writer.change(*fields, "status", "resume_at")
    transaction.on_commit(lambda: schedule_wakeup(due))


# --- holdFor ---------------------------------------------------------------------------------


def holding(log: AutomationLog) -> bool:
    """Is the run back from a hold, its conditions not checked again yet?"""
    return bool(log.hold) and not log.dry_run and not log.hold.get("checked_at")


def start_hold(writer, hold_for: datetime.timedelta, *fields: str) -> None:
    """The conditions were met: hold for `hold_for`, then check them again (a dry run only
    notes that a real run would); one state change with the other `fields` the run changed."""
    log = writer.log
    now = timezone.now()
    until = now + hold_for
    log.hold = {
        "hold_for": iso_duration(hold_for),
        "until": iso(until),
        "checked_at": None,
        "met": None,
        "trace": [],
        "note": None,
    }
    if log.dry_run:
        log.hold["note"] = (
            f"A dry run does not wait: a real run would hold for {iso_duration(hold_for)} "
            f"(until about {iso(until)}), then check the conditions again before its actions."
        )
        writer.change(*fields, "hold")
        return
    pause(writer, until, *fields, "hold")


class Recheck:
    """The run's record as it is after the hold: `object` (None when it was deleted) and the
    `changes` its conditions see: from the record before the triggering write to it now."""

    def __init__(self, log: AutomationLog):
        self.object = _current_record(log)
        self.changes = log.changes
        if self.object is not None and log.event == TriggerEvent.UPDATED:
            before = dict((log.context or {}).get("object") or {})
            for name, change in (log.changes or {}).items():
                if isinstance(change, dict):
                    before[name] = change.get("old")
            self.changes = diff(before, self.object)

    @property
    def deleted(self) -> bool:
        return self.object is None


def _current_record(log: AutomationLog) -> dict | None:
    """The run's record read again, within its organization; None when it is gone."""
    stored = (log.context or {}).get("object")
    if log.object_id is None or log.object_type is None:
        return stored  # nothing to read again: the run works on what it was given
    try:
        entry = get_automatable(log.object_type)
        instance = entry.of_organization(log.organization_id).filter(pk=log.object_id).first()
    except (LookupError, ValueError, TypeError):
        return None
    return None if instance is None else snapshot(instance)


def record_recheck(writer, recheck: Recheck, result, checked_at) -> tuple[str | None, tuple]:
    """Put the second check in the run's hold (and the record it read in the run's context,
    for its actions): (the SKIPPED run's error when the conditions no longer hold, else None;
    the log's fields that changed, for the caller's next state change)."""
    log = writer.log
    hold = dict(log.hold)
    hold["checked_at"] = iso(checked_at)
    if recheck.deleted:
        hold["met"] = False
        log.hold = hold
        return f"The record was deleted while the run held ({hold['hold_for']}).", ("hold",)
    hold["met"], hold["trace"] = result.met, result.trace
    log.hold = hold
    log.context = {**(log.context or {}), "object": recheck.object}
    log.changes = recheck.changes
    fields = ("hold", "context", "changes")
    if result.met:
        return None, fields
    return f"Conditions no longer met after holding for {hold['hold_for']}: {_why(result)}", fields


def _why(result) -> str:
    from automation.runs.when import failure, not_passed

    problem = failure(result)
    if problem:
        return f"they could not be evaluated: {problem}"
    reason = not_passed(result)
    return "not met." if reason == "." else reason.removeprefix(": ")
