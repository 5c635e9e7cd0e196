"""Validation of the values a rule stores (cron, time zone, regex)."""

import zoneinfo

import regex
from croniter import CroniterBadDateError, croniter
from django.conf import settings
from django.core.exceptions import ValidationError

NEVER_FIRES_YEARS = 8  # 29 February in a leap year is at most 8 years away


def validate_cron(expression: str) -> None:
    if not expression or not isinstance(expression, str):
        raise ValidationError("A schedule (5-field cron expression) is required.")
    if len(expression.split()) != 5:
        raise ValidationError(
            f'"{expression}" is not a 5-field cron expression (minute hour day month weekday).'
        )
    if not croniter.is_valid(expression):
        raise ValidationError(f'"{expression}" is not a valid cron expression.')
    try:
        # Valid fields can still name a date that never comes ("0 0 31 2 *"): refuse it here,
        # instead of a rule whose next run can never be computed.
        croniter(expression, max_years_between_matches=NEVER_FIRES_YEARS).get_next()
    except CroniterBadDateError:
        raise ValidationError(
            f'"{expression}" never fires (no match within {NEVER_FIRES_YEARS} years).'
        ) from None


def validate_timezone(name: str) -> None:
    if not name or not isinstance(name, str):
        raise ValidationError("A time zone is required.")
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: name too long
        raise ValidationError(f'"{name}" is not an IANA time zone (e.g. "Europe/Paris").') from None


def validate_regex(pattern) -> None:
    if not isinstance(pattern, str):
        raise ValidationError("A regular expression must be a string.")
    limit = settings.AUTOMATION_REGEX_MAX_LENGTH
    if len(pattern) > limit:
        raise ValidationError(f"The regular expression is longer than {limit} characters.")
    try:
        regex.compile(pattern)
    except regex.error as exc:
        raise ValidationError(f"Invalid regular expression: {exc}.") from None
