"""Tables the engine keeps for itself, not rules or runs: the run stream's journal and the
heartbeats of worker and scheduler processes. Their own module beside core/models.py, which
holds what users define and read."""

from django.db import models

from automation.core import heartbeats

# --- The run stream's journal (automation/live/journal.py) ---------------------------------------


class StreamHead(models.Model):
    """An organization's latest stream position: the counter its events' positions come from.

    Bumped, and so locked, right before the commit of each transaction that publishes run or
    action events (automation/live/journal.py), so positions follow commit order with no gap.
    A plain id, not a foreign key: nothing to check or lock beyond this row.
    """

    organization_id = models.BigIntegerField(primary_key=True)
    position = models.BigIntegerField(default=0)

    def __str__(self):
        return f"Stream of organization {self.organization_id} at {self.position}"


class StreamEvent(models.Model):
    """One event of an organization's run stream, as it was published: the journal a
    subscription with `after` reads before it goes live. Purged by age with the logs
    (AUTOMATION_STREAM_RETENTION_HOURS)."""

    LOG = "L"
    ACTION = "A"

    pk = models.CompositePrimaryKey("organization_id", "position")
    organization_id = models.BigIntegerField()
    position = models.BigIntegerField()
    kind = models.CharField(max_length=1, choices=[(LOG, "run"), (ACTION, "action")])
    log_id = models.BigIntegerField()
    rule_id = models.BigIntegerField()
    created_at = models.DateTimeField()
    # The published message (JSON text) without its type; a run's `context` and `changes`,
    # written once with the run, are read from its log when asked for.
    message = models.TextField()

    class Meta:
        indexes = [models.Index(fields=["log_id", "position"], name="stream_log_idx")]

    def __str__(self):
        return f"Event {self.position} of organization {self.organization_id}"


# --- Heartbeats of workers and schedulers (automation/core/heartbeats.py) -------------------------


class Heartbeat(models.Model):
    """The last sign of life of one worker or scheduler process, which /healthz reads.

    One row per (kind, process), written at most every AUTOMATION_WORKER_HEARTBEAT_SECONDS by
    the process itself, and by a scheduler at each tick; rows of processes gone for a week are
    deleted by the next writer. In the database so that both modes read it the same way.
    """

    WORKER, SCHEDULER = heartbeats.WORKER, heartbeats.SCHEDULER

    kind = models.CharField(max_length=10, choices=[(WORKER, "worker"), (SCHEDULER, "scheduler")])
    process = models.CharField(max_length=200, help_text="host:pid")
    started_at = models.DateTimeField()
    seen_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["kind", "process"], name="unique_heartbeat_process")
        ]
        indexes = [models.Index(fields=["kind", "-seen_at"], name="heartbeat_kind_seen_idx")]

    def __str__(self):
        return f"{self.kind} {self.process} seen at {self.seen_at}"
