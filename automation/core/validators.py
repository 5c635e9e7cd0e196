"""Validation of the values a rule stores (cron, time zone, regex)."""

import zoneinfo

import re2
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
        raise ValidationError(_cron_mistakes(expression))
    try:
        # Valid fields can still name a date that never comes ("0 0 31 2 *"): refuse it here,
        # instead of a rule whose next run can never be computed.
        croniter(expression, max_years_between_matches=NEVER_FIRES_YEARS).get_next()
    except CroniterBadDateError:
        raise ValidationError(
            f'"{expression}" never fires (no match within {NEVER_FIRES_YEARS} years).'
        ) from None


# The five fields of a cron expression: (name, what it takes).
CRON_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day of the month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day of the week", "0-6 (0 and 7 are Sunday) or SUN-SAT"),
)


def _cron_mistakes(expression: str) -> list[str]:
    """Which fields of a 5-field expression are wrong, each tested alone among stars: one
    message per wrong field (or one for the whole when each field is fine alone)."""
    parts = expression.split()
    messages = []
    for index, (name, takes) in enumerate(CRON_FIELDS):
        alone = ["*"] * 5
        alone[index] = parts[index]
        if not croniter.is_valid(" ".join(alone)):
            messages.append(
                f'"{expression}" is not a valid cron expression: its {name} field takes {takes} '
                f'(or a list "1,15", a range "1-5", a step "*/10"), not "{parts[index]}".'
            )
    return messages or [f'"{expression}" is not a valid cron expression.']


def validate_timezone(name: str) -> None:
    if not name or not isinstance(name, str):
        raise ValidationError("A time zone is required.")
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: name too long
        raise ValidationError(f'"{name}" is not an IANA time zone (e.g. "Europe/Paris").') from None


# RE2 refuses what a backtracking engine would need for these; the hint names the syntax.
_RE2_SYNTAX_HINT = (
    "REGEX uses RE2 syntax: lookahead and lookbehind ((?=, (?!, (?<=, (?<!), backreferences "
    "(\\1, (?P=name)), atomic groups and possessive repeats are not supported; the end of the "
    "text is \\z (not \\Z)."
)
_UNSUPPORTED_SYNTAX = (
    "invalid perl operator",
    "invalid escape sequence",
    "bad repetition operator",
)


def regex_options() -> re2.Options:
    """RE2's options for a rule's pattern: its memory bounded, and no error printed to stderr."""
    options = re2.Options()
    # Caps the compiled program and the DFA's cache together: a pattern needing more is refused
    # ("pattern too large") instead of growing the process.
    options.max_mem = settings.AUTOMATION_REGEX_MAX_MEMORY
    options.log_errors = False
    return options


def compile_regex(pattern):
    """`pattern` compiled by RE2, or a ValidationError saying why it cannot be.

    RE2 matches in time linear in the text (no backtracking), parses repetition counts with a
    limit of 1000 (nested counts multiply), and refuses a program over `max_mem` while compiling
    it, so neither compiling nor matching can blow up. re2.compile keeps the last 128 compiled
    patterns (its own LRU cache, keyed by pattern and options): a rule run again costs no compile.
    """
    if not isinstance(pattern, str):
        raise ValidationError("A regular expression must be a string.")
    limit = settings.AUTOMATION_REGEX_MAX_LENGTH
    if len(pattern) > limit:
        raise ValidationError(f"The regular expression is longer than {limit} characters.")
    try:
        return re2.compile(pattern, regex_options())
    except re2.error as exc:
        raise ValidationError(_regex_error_message(exc)) from None


def _regex_error_message(exc: re2.error) -> str:
    reason = exc.args[0] if exc.args else ""
    if isinstance(reason, bytes):
        reason = reason.decode("utf-8", "replace")
    if "pattern too large" in reason:
        limit = settings.AUTOMATION_REGEX_MAX_MEMORY
        return (
            f"The regular expression is too large: compiled, it needs more than {limit} bytes "
            "(AUTOMATION_REGEX_MAX_MEMORY). Use fewer or smaller repetitions."
        )
    message = f"Invalid regular expression: {reason}."
    if reason.startswith(_UNSUPPORTED_SYNTAX):
        message += " " + _RE2_SYNTAX_HINT
    elif reason.startswith("invalid repetition size"):
        message += " A repetition count is at most 1000, and so is the product of nested counts."
    return message
