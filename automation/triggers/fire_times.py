"""Fire times of cron schedules across DST, and next_run_at upkeep.

A rule's cron expression is read in the rule's time zone (wall-clock time); fire times are
stored and compared in UTC. croniter walks wall times; this module maps each wall time to one
instant:
- a wall time that happens twice (fall back) fires once, at its first occurrence (croniter alone,
  given aware datetimes, fires both: STACK-NOTES);
- a wall time that does not exist (spring forward) fires at the first instant after the gap, and
  several such wall times collapse into that one instant.
The mapping never decreases as wall time grows, which is what lets the walks below stop early.
A rule's next_run_at is kept as it is saved (keep_next_run_at, write_next_run_at: signals).
"""

import datetime
import logging
import zoneinfo
from collections.abc import Iterator

from croniter import CroniterBadCronError, CroniterBadDateError, croniter
from django.utils import timezone

from automation.core.choices import TriggerType
from automation.core.models import AutomationRule

logger = logging.getLogger("automation.triggers.fire_times")


UTC = datetime.UTC

MAX_UPCOMING = 50

# A walk over fire times stops after this many wall times (a cron that matches nothing for ages).
MAX_STEPS = 100_000

# Wall times are probed minute by minute to find the end of a DST gap (at most a day long).
GAP_PROBE_LIMIT = 24 * 60

# Descending walks start this far after the moment, past any DST shift's overlap.
DESCENT_MARGIN = datetime.timedelta(hours=3)


class ScheduleError(ValueError):
    """A stored schedule or time zone that cannot produce fire times."""


# --- Fire times ----------------------------------------------------------------------------------


def _zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError, OSError):
        raise ScheduleError(f'"{name}" is not an IANA time zone.') from None


def _cron(expression: str, start: datetime.datetime) -> croniter:
    try:
        return croniter(expression, start)
    except (CroniterBadCronError, ValueError, TypeError, KeyError):
        raise ScheduleError(f'"{expression}" is not a valid cron expression.') from None


def _wall(moment: datetime.datetime, zone) -> datetime.datetime:
    """The naive wall-clock time in `zone` at the aware instant `moment`."""
    return moment.astimezone(zone).replace(tzinfo=None)


def _exists(wall: datetime.datetime, zone) -> bool:
    # Through UTC: astimezone() to the datetime's own tzinfo returns it unchanged.
    return _wall(wall.replace(tzinfo=zone).astimezone(UTC), zone) == wall


def fire_instant(wall: datetime.datetime, zone) -> datetime.datetime:
    """The UTC instant a naive wall time fires at (see the module docstring for DST)."""
    if _exists(wall, zone):
        # fold=0: of a wall time that happens twice, the first occurrence.
        return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    probe = wall.replace(second=0, microsecond=0)
    for _ in range(GAP_PROBE_LIMIT):
        probe += datetime.timedelta(minutes=1)
        if _exists(probe, zone):
            return probe.replace(tzinfo=zone).astimezone(UTC)
    raise ScheduleError(f"{wall} in {zone.key} is in a gap longer than a day.")


def fires_after(expression: str, tz_name: str, after: datetime.datetime) -> Iterator:
    """Fire instants (UTC) strictly after `after`, ascending, each once."""
    zone = _zone(tz_name)
    walls = _cron(expression, _wall(after, zone))
    last = after
    for _ in range(MAX_STEPS):
        try:
            wall = walls.get_next(datetime.datetime)
        except CroniterBadDateError:
            return
        instant = fire_instant(wall, zone)
        if instant > last:
            yield instant
            last = instant


def fires_at_or_before(expression: str, tz_name: str, moment: datetime.datetime) -> Iterator:
    """Fire instants (UTC) at or before `moment`, descending, each once."""
    zone = _zone(tz_name)
    # A wall time later than moment's own can fire before it (the first occurrence of a
    # repeated hour), so the walk starts a margin later.
    walls = _cron(expression, _wall(moment + DESCENT_MARGIN, zone))
    last = None
    for _ in range(MAX_STEPS):
        try:
            wall = walls.get_prev(datetime.datetime)
        except CroniterBadDateError:
            return
        instant = fire_instant(wall, zone)
        if instant <= moment and instant != last:
            yield instant
            last = instant


def next_fire_after(expression: str, tz_name: str, after: datetime.datetime):
    """The first fire instant (UTC) after `after`, or None when the cron never matches."""
    return next(fires_after(expression, tz_name, after), None)


def fires_since(rule, start, end, limit: int) -> tuple[list, bool]:
    """The latest `limit` fire instants in [start, end], ascending, and whether more were cut."""
    found = []
    for instant in fires_at_or_before(rule.schedule, rule.timezone, end):
        if instant < start:
            break
        if len(found) == limit:
            return sorted(found), True
        found.append(instant)
    return sorted(found), False


# --- next_run_at and upcoming runs ------------------------------------------------------------------


def is_scheduled(rule: AutomationRule) -> bool:
    """Will this rule fire on its schedule (an active, live SCHEDULE rule)?"""
    return rule.trigger_type == TriggerType.SCHEDULE and rule.is_active and rule.deleted_at is None


def compute_next_run_at(rule: AutomationRule, after=None):
    """The rule's next fire time after `after` (default now), or None when it does not fire."""
    if not is_scheduled(rule):
        return None
    return next_fire_after(rule.schedule, rule.timezone, after or timezone.now())


def upcoming_runs(rule: AutomationRule, count: int = 5, after=None) -> list[datetime.datetime]:
    """The next `count` (1..50) fire times (UTC) of a rule; [] for a rule that does not fire."""
    if not isinstance(count, int) or not 1 <= count <= MAX_UPCOMING:
        raise ValueError(f"count must be between 1 and {MAX_UPCOMING}.")
    if not is_scheduled(rule):
        return []
    runs = []
    for instant in fires_after(rule.schedule, rule.timezone, after or timezone.now()):
        runs.append(instant)
        if len(runs) == count:
            break
    return runs


# Fields whose change makes next_run_at be computed afresh from now.
SCHEDULE_FIELDS = ("trigger_type", "schedule", "timezone", "is_active", "deleted_at")

NEXT_RUN_CHANGED_ATTR = "_automation_next_run_changed"


def keep_next_run_at(sender, instance: AutomationRule, raw=False, **kwargs):
    """pre_save on AutomationRule: give the rule the right next_run_at.

    Created, schedule or time zone edited, resumed or restored: the first fire time after now
    (slots that passed while paused are not "missed"). Paused, deleted or not a SCHEDULE rule:
    None. Any other edit keeps the stored next_run_at / last_run_at, which the scheduler owns
    (an instance loaded before a tick must not write an older value back).
    """
    if raw:
        return
    instance.__dict__.pop(NEXT_RUN_CHANGED_ATTR, None)
    before = instance.next_run_at
    if not is_scheduled(instance):
        instance.next_run_at = None
    else:
        stored = None
        if not instance._state.adding and instance.pk is not None:
            stored = (
                AutomationRule._base_manager.filter(pk=instance.pk)
                .values(*SCHEDULE_FIELDS, "next_run_at", "last_run_at")
                .first()
            )
        unchanged = stored is not None and all(
            stored[name] == getattr(instance, name) for name in SCHEDULE_FIELDS
        )
        if unchanged and stored["next_run_at"] is not None:
            instance.next_run_at = stored["next_run_at"]
            instance.last_run_at = stored["last_run_at"]
        else:
            try:
                instance.next_run_at = compute_next_run_at(instance)
            except ScheduleError:
                logger.warning("rule %s has an unusable schedule; it will not fire", instance.pk)
                instance.next_run_at = None
    if instance.next_run_at != before:
        instance.__dict__[NEXT_RUN_CHANGED_ATTR] = True


def write_next_run_at(sender, instance: AutomationRule, raw=False, update_fields=None, **kwargs):
    """post_save on AutomationRule: persist next_run_at when save(update_fields=...) left it out."""
    changed = instance.__dict__.pop(NEXT_RUN_CHANGED_ATTR, False)
    if raw or not changed or update_fields is None or "next_run_at" in update_fields:
        return
    AutomationRule.objects.filter(pk=instance.pk).update(next_run_at=instance.next_run_at)
