"""What a finished run tells operators: its metrics, and a WARNING line when it failed.

Called where a run ends (`writer.finish`, and `create_run` for a run written finished: over a
budget, past the chain depth, a schedule slot's fan-out log), inside the transaction that writes
the end; counted and logged only once that transaction commits, so a batch rolled back and
executed again run by run (runs/execute.py) counts each run once. Dry runs are previews and are
not counted.

The WARNING line names the run, its rule and organization, the failing action(s) and the
error (the run's error says which action failed, and why); with LOG_FORMAT=json the same ids are
fields of the object (observability/logs.py).
"""

import logging

from django.db import transaction

from automation.core.choices import ActionStatus, RunStatus
from observability import metrics

logger = logging.getLogger("automation.runs")

WARNED_STATUSES = (RunStatus.FAILED, RunStatus.PARTIAL)


def finished(log, *, queued: bool = True) -> None:
    """Count (and for a failure, log) `log`'s end once the open transaction commits. `queued`:
    the run waited in the queue and was claimed (not written finished at its creation)."""
    if log.dry_run:
        return
    transaction.on_commit(_Ended(log, queued))


class _Ended:
    """A finished run as it was when it ended (the log object may change after)."""

    __slots__ = ("status", "trigger", "run", "wait", "actions", "ids", "error", "failed")

    def __init__(self, log, queued: bool):
        self.status, self.trigger = log.status, log.trigger
        started, finished_at = log.started_at, log.finished_at
        self.run = (finished_at - started).total_seconds() if started and finished_at else None
        self.wait = None
        if queued and started and log.created_at:
            self.wait = max(0.0, (started - log.created_at).total_seconds())
        # (type, status, seconds or None) per action; entries are dicts the engine keeps changing.
        self.actions = [
            (entry["action_type"], entry["status"], entry.get("duration_ms"))
            for entry in log.action_logs or ()
        ]
        self.ids = (log.pk, log.rule_id, log.organization_id, log.run_key())
        self.error = log.error if self.status in WARNED_STATUSES else ""
        self.failed = [
            f"actions.{entry['order']} {entry['action_type']}"
            for entry in log.action_logs or ()
            if entry["status"] == ActionStatus.FAILED
        ]

    def __call__(self) -> None:
        metrics.child(metrics.RUNS, self.status, self.trigger).inc()
        if self.run is not None:
            metrics.RUN_DURATION.observe(self.run)
        if self.wait is not None:
            metrics.QUEUE_WAIT.observe(self.wait)
        for action_type, status, duration_ms in self.actions:
            metrics.child(metrics.ACTIONS, action_type, status).inc()
            if duration_ms is not None:
                metrics.child(metrics.ACTION_DURATION, action_type).observe(duration_ms / 1000)
        if self.status in WARNED_STATUSES:
            self._warn()

    def _warn(self) -> None:
        log_id, rule_id, organization_id, run_key = self.ids
        logger.warning(
            "run %s of rule %s (organization %s) %s: %s",
            log_id,
            rule_id,
            organization_id,
            self.status,
            self.error or "no error recorded",
            extra={
                "run_id": log_id,
                "rule_id": rule_id,
                "organization_id": organization_id,
                "correlation_id": run_key,
                "status": self.status,
                "failed_actions": self.failed,
            },
        )
