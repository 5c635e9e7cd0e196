"""Relative date values of conditions: "now" and signed ISO 8601 durations from now.

A condition on a date or date-time field may compare with a moment relative to its evaluation
("created more than 7 days ago": `created_at LESS_THAN "-P7D"`) instead of a fixed one. Accepted:

- "now": the instant of the evaluation (for a date field: today);
- a signed ISO 8601 duration, `[+-]PnYnMnWnDTnHnMnS` with at least one part and only seconds
  fractional: "-P7D" (7 days ago), "P1D" or "+P1D" (a day ahead), "-PT2H30M", "-P1Y2M".

How a duration is added, so that "-P1D" means "this time yesterday" across a DST change: years,
months, weeks and days move the wall-clock time in the rule's time zone (calendar arithmetic: a
month back from 31 March is 28 or 29 February); hours, minutes and seconds are then exact elapsed
time. A date field counts in whole days from today in the rule's time zone, so its durations have
no time part.

The durations are parsed by core/durations.py, shared with the `add_duration` filter and waits;
the calendar arithmetic is dateutil's relativedelta (installed with croniter).
"""

import datetime
import re

from automation.core.durations import Duration, parse_duration

NOW = "now"

ACCEPTED_FORMS = (
    '"now", or a signed ISO 8601 duration from now such as "-P7D" (7 days ago), '
    '"P1D" or "+P1D" (a day ahead), "-PT2H30M" or "-P1Y2M" (parts Y, M, W, D, then T and H, M, '
    "S; only seconds may have a fraction)"
)

# What reads as an attempt at a relative value (so a typo gets the relative-value message).
_LOOKS_RELATIVE = re.compile(r"\s*(?:now|[+-]?p.*)\s*", re.IGNORECASE | re.DOTALL)


class RelativeDateError(ValueError):
    """A relative value that is malformed or lands outside the calendar; the message says why."""


def is_relative(value) -> bool:
    """Is `value` meant as a relative date ("now", or something that starts like a duration)?"""
    return isinstance(value, str) and _LOOKS_RELATIVE.fullmatch(value) is not None


def parse(value: str) -> Duration | None:
    """The duration `value` stands for (None for "now"); RelativeDateError when malformed."""
    if value.strip() == NOW:
        return None
    duration = parse_duration(value)
    if duration is None:
        raise RelativeDateError(f"{value!r} is not a relative date: use {ACCEPTED_FORMS}.")
    return duration


def resolve_datetime(value: str, now: datetime.datetime, zone: datetime.tzinfo):
    """The aware instant `value` stands for at `now`, calendar parts counted in `zone`."""
    duration = parse(value)
    if duration is None:
        return now.astimezone(datetime.UTC)
    try:
        wall = now.astimezone(zone) + duration.calendar_part()
        return wall.astimezone(datetime.UTC) + duration.time_part()
    except (ValueError, OverflowError):
        raise _outside_calendar(value) from None


def resolve_date(value: str, today: datetime.date) -> datetime.date:
    """The date `value` stands for when it is `today`; durations count whole days or more."""
    duration = parse(value)
    if duration is None:
        return today
    if duration.has_time:
        raise RelativeDateError(
            f"{value!r}: a date field compares whole days, so a relative date has no time part "
            '(e.g. "-P7D", "-P1M").'
        )
    try:
        return today + duration.calendar_part()
    except (ValueError, OverflowError):
        raise _outside_calendar(value) from None


def _outside_calendar(value: str) -> RelativeDateError:
    return RelativeDateError(f"{value!r} reaches outside the calendar (years 1 to 9999).")
