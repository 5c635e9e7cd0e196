"""What a run knows: the JSON world its conditions and action templates are evaluated in."""

import datetime
import zoneinfo
from dataclasses import dataclass, field
from typing import Any

# The variables template_variables() provides, the one list of them: a placeholder must start
# with one (automation/actions/templates.py checks rules against it when they are saved).
TEMPLATE_VARIABLES = (
    "object",
    "changes",
    "event",
    "trigger",
    "rule",
    "now",
    "now_local",
    "results",
    "payload",
)


def zone_of(name: str | None) -> datetime.tzinfo:
    """A rule's time zone; UTC when it has none or it is not one (a rule is validated when
    saved, so only a row written around that check, and shown times must not fail over it)."""
    try:
        return zoneinfo.ZoneInfo(name) if name else datetime.UTC
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError, OSError):
        return datetime.UTC


def local_isoformat(moment: datetime.datetime, zone_name: str | None) -> str:
    """An instant as ISO 8601 in a rule's time zone, with that zone's UTC offset then
    ("2026-12-02T09:00:00+01:00")."""
    return moment.astimezone(zone_of(zone_name)).isoformat()


@dataclass
class RunContext:
    organization_id: int
    rule_id: int
    rule_name: str
    trigger: str  # TriggerType
    event: str | None = None  # TriggerEvent
    model: str | None = None  # "catalog.product"
    object_id: str | None = None
    object: dict | None = None  # snapshot of the triggering record
    changes: dict | None = None  # {"field": {"old": .., "new": ..}}
    # The JSON object a WEBHOOK run was sent (core/payloads.py); None for other runs.
    payload: dict | None = None
    user_id: int | None = None
    log_id: int | None = None
    dry_run: bool = False
    now: datetime.datetime | None = None
    timezone: str = "UTC"  # the rule's, for now_local
    # Results of earlier actions in this run, by action order.
    results: dict[int, Any] = field(default_factory=dict)
    # The log's run_key() (AutomationLog.run_uuid): names the run's outside effects.
    run_key: str | None = None
    # Order of the action being run (set by the run before each action).
    action_order: int | None = None
    # Bytes this run's placeholders have produced so far (bounded per run: actions.py, _render).
    rendered_bytes: int = 0

    def outside_key(self) -> str:
        """What names the current action's outside effect, the same for every attempt and
        every resumption of the run: "<run key>-<action order>" (a webhook's Idempotency-Key).
        A log id would not do: ids repeat across deployments and after a database restore."""
        if self.run_key is None or self.action_order is None:
            raise ValueError("The run's key and the action's order are not known.")
        return f"{self.run_key}-{self.action_order}"

    def template_variables(self) -> dict:
        """The variables "{{ path }}" placeholders read."""
        now = self.now or datetime.datetime.now(datetime.UTC)
        return {
            "object": self.object,
            "changes": self.changes or {},
            "event": self.event,
            "trigger": self.trigger,
            "rule": {"id": self.rule_id, "name": self.rule_name},
            "now": now.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z"),
            "now_local": local_isoformat(now, self.timezone),
            "results": {str(order): result for order, result in self.results.items()},
            "payload": self.payload,
        }
