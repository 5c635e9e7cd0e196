"""What a run knows: the JSON world its conditions and action templates are evaluated in."""

import datetime
from dataclasses import dataclass, field
from typing import Any


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
    user_id: int | None = None
    log_id: int | None = None
    dry_run: bool = False
    now: datetime.datetime | None = None
    # Results of earlier actions in this run, by action order.
    results: dict[int, Any] = field(default_factory=dict)
    # Order of the action being run (set by the run before each action): the webhook's
    # Idempotency-Key is "<log id>-<action order>".
    action_order: int | None = None
    # Bytes this run's placeholders have produced so far (bounded per run: actions.py, _render).
    rendered_bytes: int = 0

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
            "results": {str(order): result for order, result in self.results.items()},
        }
