"""WAIT: pause the run for `seconds`, or `until` a date or date-time (a template), then go on
with the next action.

This handler only works out when the wait ends (`due`) and checks the parameters at save; the
waiting itself is the run's (runs/plan.py, runs/waits.py): the run is stored WAITING with its due
time, no worker holds it meanwhile, and it is woken then, in whichever worker is free, to go on
with the next action, the earlier actions' results kept. Its result is {"until": <ISO 8601, UTC>,
"waited": true} once the run went on, or "waited": false when the time had already come (an
`until` in the past: the run goes on at once). A dry run does not wait and says it would.
"""

import datetime
import re

from django.conf import settings

from automation.actions import template_types as kinds
from automation.actions.base import (
    ActionError,
    ActionHandler,
    add_message,
    parameters_schema_of,
    render_parameter,
    template_errors,
)
from automation.actions.templates import has_placeholder, placeholder_kind
from automation.core.choices import ActionType
from automation.core.context import zone_of
from automation.core.durations import iso_duration

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# The kinds of value an `until` placeholder may give: text is read when the run gets there.
_DATED = frozenset({kinds.TEXT, kinds.DATE, kinds.DATETIME, kinds.ANY})


def longest_wait() -> datetime.timedelta:
    return datetime.timedelta(seconds=settings.AUTOMATION_MAX_WAIT_SECONDS)


def moment(text, zone: datetime.tzinfo) -> datetime.datetime | None:
    """The instant an ISO 8601 date or date-time stands for (aware, UTC): a date is its
    midnight in the rule's time zone, a date-time without an offset is UTC (as the template
    filters read it); None when `text` is neither."""
    if not isinstance(text, str):
        return None
    text = text.strip()
    try:
        if _DATE.fullmatch(text):
            day = datetime.date.fromisoformat(text)
            return datetime.datetime.combine(day, datetime.time(), zone).astimezone(datetime.UTC)
        found = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if found.tzinfo is None:
        found = found.replace(tzinfo=datetime.UTC)
    return found.astimezone(datetime.UTC)


def iso(instant: datetime.datetime) -> str:
    return instant.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


class WaitHandler(ActionHandler):
    action_type = ActionType.WAIT
    parameters_schema = parameters_schema_of(
        {
            "seconds": {
                "description": "Wait this many seconds (at most AUTOMATION_MAX_WAIT_SECONDS, "
                "30 days by default).",
                "type": "integer",
                "minimum": 1,
            },
            "until": {
                "description": "Wait until this ISO 8601 date-time (UTC when it has no offset) "
                "or date (its midnight in the rule's time zone); a template, such as "
                "\"{{ now | add_duration('P1D') }}\". In the past: the run goes on at once.",
                "type": "string",
                "minLength": 1,
            },
        },
        [],
        "Pause the run (stored WAITING, held by no worker) for `seconds` or until `until` (one "
        "of them), then go on with the next action.",
    )
    # The run waits here: runs/plan.py stores it WAITING instead of going on (see the module).
    pauses_run = True

    def check(self, parameters, rule, errors, scope):
        given = [name for name in ("seconds", "until") if name in parameters]
        if len(given) != 1 and not errors:
            add_message(errors, "", "Give either seconds or until (one of them).")
            return
        if "seconds" in parameters:
            maximum = longest_wait()
            if parameters["seconds"] > maximum.total_seconds():
                add_message(
                    errors,
                    "seconds",
                    f"At most {int(maximum.total_seconds())} seconds ({iso_duration(maximum)}, "
                    "AUTOMATION_MAX_WAIT_SECONDS).",
                )
        if "until" in parameters:
            self._check_until(parameters["until"], rule, errors, scope)

    @staticmethod
    def _check_until(until: str, rule, errors, scope) -> None:
        if not has_placeholder(until):
            if moment(until, datetime.UTC) is None:
                add_message(errors, "until", _not_a_moment(until))
            return
        before = len(errors.get("until", []))
        template_errors(until, "until", errors, scope)
        if len(errors.get("until", [])) > before:
            return
        kind = placeholder_kind(until, scope)
        if kind is not None and kind not in _DATED:
            add_message(
                errors,
                "until",
                f"'{until}' gives {kinds.DESCRIBED[kind]}; until takes an ISO 8601 date or "
                "date-time (for a number of seconds, use seconds).",
            )

    def due(self, parameters: dict, ctx) -> datetime.datetime:
        """When the wait ends for this run (UTC); ActionError when `until` does not render a
        date or date-time, or lands beyond the longest wait."""
        now = ctx.now or datetime.datetime.now(datetime.UTC)
        if "seconds" in parameters:
            return now + datetime.timedelta(seconds=parameters["seconds"])
        rendered = render_parameter(parameters.get("until", ""), ctx, "until", as_text=True)
        found = moment(rendered, zone_of(ctx.timezone))
        if found is None:
            raise ActionError(f"until: {_not_a_moment(rendered)}")
        if found - now > longest_wait():
            raise ActionError(
                f"until: {iso(found)} is more than {iso_duration(longest_wait())} away "
                "(AUTOMATION_MAX_WAIT_SECONDS)."
            )
        return found

    def execute(self, parameters, ctx, *, on_attempt=None):
        """What the run waits for: {"until"}. The run itself pauses (runs/plan.py)."""
        return {"until": iso(self.due(parameters, ctx))}

    def dry_run(self, parameters, ctx):
        now = ctx.now or datetime.datetime.now(datetime.UTC)
        due = self.due(parameters, ctx)
        seconds = max((due - now).total_seconds(), 0)
        return {
            "would": "wait" if seconds else "go on",
            "until": iso(due),
            "seconds": round(seconds, 3),
        }


def _not_a_moment(text: str) -> str:
    shown = text if len(text) <= 100 else f"{text[:100]}..."
    return (
        f'{shown!r} is not an ISO 8601 date or date-time (such as "2026-12-24" or '
        '"2026-12-24T09:00:00Z").'
    )
