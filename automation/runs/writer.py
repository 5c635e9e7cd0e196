"""A run's log and its state changes: written with one guarded UPDATE per transaction, each
change bumping `seq` and published after commit; how a run finishes, and fails unexpectedly."""

import collections
import contextlib
import logging
import uuid

from django.db import transaction
from django.utils import timezone

from automation.core.choices import ActionStatus, RunStatus
from automation.core.models import AutomationLog
from automation.live.events import log_message, publish_action, publish_log_message
from automation.runs import outcomes

logger = logging.getLogger("automation.runs.writer")


class LostClaim(Exception):
    """Another worker owns the run now (the sweeper judged this one dead)."""


class RunWriter:
    """A run's log and the state changes not written yet.

    `change` records a state change (seq + 1) and publishes it after commit; `step` is one
    transaction whose changes are written with a single guarded UPDATE at its end: only while the
    row still has the seq this worker last wrote (else LostClaim, and the whole step, a database
    action's writes included, rolls back). Every writer of a run's state bumps seq (this class,
    the sweeper's revive), so an equal seq means nobody else wrote. Dry runs are not guarded:
    nobody else runs them.

    The guard and the claim name the row by primary key only, never by status: with statistics
    from before a burst, PostgreSQL took `status = 'PENDING'` to be rare and walked the status
    index over every PENDING run instead (6 ms a claim with 19,000 queued, growing with the queue).
    """

    def __init__(self, log: AutomationLog, *, together: bool = False):
        self.log = log
        self.fields: set[str] = set()
        self.stored_seq = log.seq
        # Executed in a batch: its database actions take no savepoint (RedoAlone on a failure).
        self.together = together
        # The run's latest state change not published yet (see `change`): its message.
        self._unpublished: dict | None = None

    def change(self, *fields: str) -> None:
        """Record a state change (seq + 1), published with this transaction.

        Action progress is published as action events (set_entry); a change of the run itself
        as a log event, except that changes of the same transaction that keep the run's status
        are one event, the latest: the claim (RUNNING) and the recorded conditions and plan
        (still RUNNING) reach subscribers as one RUNNING event. Every status a run goes through
        is still published, in order, and each event carries the seq of the state it shows.
        """
        self.fields.update(fields)
        self.log.seq += 1
        if fields == ("action_logs",):
            self.publish_pending()  # the run's state before the action's, in order
            return
        latest = log_message(self.log)
        if self._unpublished is not None and self._status(self._unpublished) != self.log.status:
            self.publish_pending()
        self._unpublished = latest

    @staticmethod
    def _status(message: dict) -> str:
        return message["log"]["status"]

    def publish_pending(self) -> None:
        """Hand the latest unpublished change to the open transaction (sent after it commits)."""
        message, self._unpublished = self._unpublished, None
        if message is not None:
            publish_log_message(self.log.organization_id, message)

    @contextlib.contextmanager
    def step(self):
        try:
            with transaction.atomic():
                yield
                self.flush()
        except BaseException:
            self.rollback()
            raise

    def rollback(self) -> None:
        """The step's transaction rolled back: forget what it changed."""
        self.log.seq = self.stored_seq
        self.fields.clear()
        self._unpublished = None

    def flush(self) -> None:
        if not self.fields:
            return
        self.publish_pending()
        _guarded_update(tuple(sorted(self.fields)), [self], guarded=not self.log.dry_run)
        self.stored_seq = self.log.seq
        self.fields.clear()

    @staticmethod
    def flush_many(writers: list["RunWriter"]) -> None:
        """`flush()` for the runs of a batch, in its transaction: each run's guarded UPDATE as
        alone, sent together for the runs that changed the same fields (one executemany: one
        round trip on PostgreSQL, whose driver pipelines it)."""
        groups = collections.defaultdict(list)
        for writer in writers:
            if writer.fields:
                groups[tuple(sorted(writer.fields))].append(writer)
        for names, group in groups.items():
            for writer in group:
                writer.publish_pending()
            _guarded_update(names, group)
            for writer in group:
                writer.stored_seq = writer.log.seq
                writer.fields.clear()


def _guarded_update(names: tuple[str, ...], writers: list[RunWriter], guarded=True) -> None:
    """UPDATE each writer's log (seq, heartbeat and `names`) where its seq is still the stored
    one; LostClaim unless every row matched. `guarded=False` (a dry run, which nobody else
    runs): by primary key alone.

    The statement is built once per process for each set of fields (_update_statement) and its
    values prepared as Django's update() prepares them: through `QuerySet.update` Django compiled
    it again for every state change, about a third of a lone run's claim (docs/benchmarks.md).
    """
    connection = transaction.get_connection()
    sql, fields = _update_statement(connection, names, guarded)
    now = timezone.now()
    rows = []
    for writer in writers:
        log = writer.log
        log.heartbeat_at = now
        values = [
            field.get_db_prep_save(getattr(log, field.attname), connection) for field in fields
        ]
        rows.append([*values, log.pk, writer.stored_seq] if guarded else [*values, log.pk])
    with connection.cursor() as cursor:
        if len(rows) == 1:
            cursor.execute(sql, rows[0])
        else:
            cursor.executemany(sql, rows)
        if cursor.rowcount != len(rows):
            pks = [writer.log.pk for writer in writers]
            raise LostClaim(pks[0] if len(pks) == 1 else pks)


_statements: dict[tuple, tuple[str, list]] = {}


def _update_statement(connection, names: tuple[str, ...], guarded: bool) -> tuple[str, list]:
    """(sql, fields) of the UPDATE of a log's seq, heartbeat and `names`, by primary key (and
    stored seq when `guarded`), for `connection`'s database."""
    key = (connection.alias, connection.vendor, names, guarded)
    statement = _statements.get(key)
    if statement is None:
        quote = connection.ops.quote_name
        meta = AutomationLog._meta
        fields = [meta.get_field(name) for name in ("seq", "heartbeat_at", *names)]
        sql = (
            f"UPDATE {quote(meta.db_table)} SET "
            + ", ".join(f"{quote(field.column)} = %s" for field in fields)
            + f" WHERE {quote(meta.pk.column)} = %s"
        )
        if guarded:
            sql += f" AND {quote(meta.get_field('seq').column)} = %s"
        statement = _statements[key] = (sql, fields)
    return statement


FINISHED_ACTION_STATUSES = {ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.SKIPPED}
# How many times a run is evaluated again when it changed between its evaluation and its claim
# (the sweeper revived it meanwhile); then it is left PENDING for the sweeper.


def new_entry(index: int, action) -> dict:
    return {
        "order": index,
        "action_type": action.action_type,
        "status": ActionStatus.PENDING,
        "attempt": 0,
        "started_at": None,
        "finished_at": None,
        "duration_ms": None,
        "result": None,
        "error": None,
    }


def set_entry(writer: RunWriter, entry: dict, **changes) -> None:
    entry.update(changes)
    writer.change("action_logs")
    publish_action(writer.log, entry)


def mark_running(writer: RunWriter) -> None:
    """Claimed: RUNNING. A run back from a wait keeps the start of its first claim, so its
    duration covers the wait."""
    log = writer.log
    log.status = RunStatus.RUNNING
    if log.resume_at is None or log.started_at is None:
        log.started_at = timezone.now()
    writer.change("status", "started_at")


def finish(writer: RunWriter, status: str, error: str = "", *fields: str) -> None:
    """The run's last state change: `status`, with the other `fields` it changed."""
    log = writer.log
    log.status = status
    log.finished_at = timezone.now()
    if error:
        log.error = error
    changed = [*fields, "status", "finished_at", "error", "rule_revision"]
    if status == RunStatus.SKIPPED:
        changed += ["conditions_met", "condition_trace"]
    writer.change(*changed)
    outcomes.finished(log)  # counted, and a failure logged, once this commits


def fail_unexpectedly(writer: RunWriter, exc: Exception) -> None:
    """An unexpected error: the run ends FAILED, and so do its unfinished actions (never left
    RUNNING); its error is a reference to the server log, never the exception's text."""
    error = internal_error(f"run {writer.log.pk} failed unexpectedly", exc)
    with contextlib.suppress(LostClaim), writer.step():
        settle_actions(writer, error)
        finish(writer, RunStatus.FAILED, error=error)


def internal_error(what: str, exc: Exception) -> str:
    """Log `exc` with a new reference; the error members see, naming only that reference.

    An unexpected exception's text may be the database's (SQL, values of other rows, names of
    tables): it belongs in the server log, which the reference finds.
    """
    reference = uuid.uuid4().hex[:12]
    logger.error(
        "%s (reference %s)", what, reference, exc_info=exc, extra={"correlation_id": reference}
    )
    return f"Internal error (reference {reference})."


def settle_actions(writer: RunWriter, error: str) -> None:
    """Bring every action entry of a failed run to a final state: RUNNING ones FAILED with
    `error`, the ones not started SKIPPED.

    From the entries as committed, not as in memory: those may hold what the failed transaction
    could not write (a result the database refused, a database action rolled back).
    """
    log = writer.log
    stored = AutomationLog.objects.filter(pk=log.pk).values_list("action_logs", flat=True)
    log.action_logs = stored.first() or []
    now = timezone.now().isoformat()
    for entry in log.action_logs:
        if entry["status"] in (ActionStatus.RUNNING, ActionStatus.WAITING):
            set_entry(writer, entry, status=ActionStatus.FAILED, error=error, finished_at=now)
        elif entry["status"] == ActionStatus.PENDING:
            set_entry(writer, entry, status=ActionStatus.SKIPPED, error="The run failed.")
