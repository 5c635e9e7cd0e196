"""Executing a run, and the service calls that start one by hand (run_rule, retry_run).

The life of a run (ARCHITECTURE.md): the conditions of a PENDING run are evaluated (outside any
transaction), the log is claimed (SELECT ... FOR UPDATE SKIP LOCKED) and the verdict recorded,
then its actions run in order. Every state change bumps the log's `seq` and is published after
commit; the changes are written with one guarded UPDATE per transaction (the worker must still own
the run), in few transactions (see "Executing a run"). A database action commits in the same
transaction as its SUCCEEDED entry, so a run that is resumed after its worker died never applies
it twice. No exception leaves a log RUNNING.
"""

import collections
import contextlib
import datetime
import logging
import time
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts.current import acting_as
from automation.conditions.evaluate import ConditionResult
from automation.core.choices import ActionStatus, RunStatus, TriggerType
from automation.core.context import RunContext
from automation.core.models import AutomationLog, AutomationRule
from automation.core.snapshots import without_nul
from automation.fanout import budget
from automation.fanout.chain import Chain, running
from automation.index.definitions import RuleDefinition, rule_definition
from automation.live import events as live
from automation.live.events import publish_action, publish_log
from automation.triggers.outbox import OMITTED_KEY, create_run, depth_limit_error, enqueue_runs

logger = logging.getLogger("automation.runs.execute")

FINISHED_ACTION_STATUSES = {ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.SKIPPED}
# How many times a run is evaluated again when it changed between its evaluation and its claim
# (the sweeper revived it meanwhile); then it is left PENDING for the sweeper.
EVALUATION_ATTEMPTS = 3


class RunConflict(Exception):
    """The run's state forbids the request now (e.g. retrying a run that is still running)."""


class RunObjectNotFound(Exception):
    """The object to run on is not a record of the rule's organization."""


class LostClaim(Exception):
    """Another worker owns the run now (the sweeper judged this one dead)."""


class RedoAlone(Exception):
    """An action of a run executed in a batch failed: the batch rolls back, and its runs are
    executed one by one (see "Executing runs in batches")."""


# --- Starting runs by hand ----------------------------------------------------------------------


def run_rule(
    rule: AutomationRule,
    *,
    object_id=None,
    user=None,
    dry_run=False,
    changes=None,
    record=None,
) -> AutomationLog:
    """Run `rule` now (MANUAL trigger), on `object_id` when the rule has a model.

    A real run is queued and returned PENDING. A dry run is executed here, synchronously: its
    conditions are evaluated and every action's parameters rendered and validated, recording what
    each action would do; it writes nothing but its own log. A dry run stands for the rule's
    event and may be given simulated `changes` and a `record` (automation/simulation.py); with a
    `record`, `object_id` may be left out.
    """
    from automation.conditions.simulation import refuse_on_a_real_run, simulate

    if not dry_run:
        refuse_on_a_real_run(changes, record)
    content_type = rule.content_type
    object_snapshot = None
    if content_type is not None:
        if object_id not in (None, ""):
            instance = _find_object(rule, object_id)
            from automation.core.snapshots import snapshot

            object_snapshot = snapshot(instance)
            object_id = instance.pk
        elif dry_run and record is not None:
            object_id = None  # the whole record is simulated
        else:
            raise ValidationError({"objectId": [_object_needed(dry_run)]})
    elif object_id not in (None, ""):
        raise ValidationError({"objectId": ["This rule has no model, so it takes no record."]})
    else:
        object_id = None
    simulation = None
    if dry_run:
        simulation = simulate(rule, object_snapshot, changes=changes, record=record)
        object_snapshot = simulation.object_snapshot
    with transaction.atomic():
        log = create_run(
            rule,
            trigger=TriggerType.MANUAL,
            content_type=content_type,
            object_id=object_id,
            object_snapshot=object_snapshot,
            user_id=user.pk if user is not None and user.is_authenticated else None,
            dry_run=dry_run,
            **(_simulated(simulation) if simulation is not None else {}),
        )
    if dry_run and log.status == RunStatus.PENDING:
        execute_dry_run(log)
        log.refresh_from_db()
    return log


def _object_needed(dry_run: bool) -> str:
    if dry_run:
        return "This rule has a model: give the record's id, or a simulated record (record)."
    return "This rule has a model: give the record's id."


def _simulated(simulation) -> dict:
    """create_run's arguments for a dry run's simulated event; a dry run whose simulated event
    would not fire the rule is written SKIPPED, saying why."""
    arguments = {"event": simulation.event, "changes": simulation.changes}
    if simulation.given:
        arguments["extra_context"] = {"simulated": simulation.given}
    if simulation.refusal:
        arguments.update(status=RunStatus.SKIPPED, error=simulation.refusal)
    return arguments


def _find_object(rule, object_id):
    model = rule.content_type.model_class()
    try:
        instance = model.objects.filter(pk=object_id, organization_id=rule.organization_id).first()
    except (ValueError, TypeError, ValidationError):
        instance = None
    if instance is None:
        raise RunObjectNotFound(f"No {rule.model} with id {object_id} in this organization.")
    return instance


def retry_run(log: AutomationLog, *, user=None) -> AutomationLog:
    """A new run with the same context as `log`, linked through retry_of. Not for live runs.

    The retry takes its original's place in its tree: the same parent, rootLog and depth, so it
    counts against that tree's fan-out budget and chain depth (a retry of a run cut at the chain
    depth is cut again). The retry of a real run is queued and returned PENDING; the retry of a
    dry run is a dry run, executed here like runRule's (no worker ever takes a dry run).
    """
    if log.status in (RunStatus.PENDING, RunStatus.RUNNING):
        raise RunConflict(f"Run {log.pk} is still {log.status}; retry it once it has finished.")
    if (log.context or {}).get(OMITTED_KEY):
        raise RunConflict(
            f"Run {log.pk} kept no snapshot (over a byte budget): run the rule on the record "
            "again instead (runRule)."
        )
    chain = (log.context or {}).get("chain")
    refusal = {}
    if log.depth > settings.AUTOMATION_MAX_CHAIN_DEPTH:
        refusal = {
            "status": RunStatus.FAILED,
            "error": depth_limit_error((*(chain or ()), log.rule.name)),
        }
    with transaction.atomic():
        retry = create_run(
            log.rule,
            trigger=log.trigger,
            event=log.event,
            content_type=log.content_type,
            object_id=log.object_id,
            object_snapshot=(log.context or {}).get("object"),
            changes=log.changes,
            user_id=user.pk if user is not None and user.is_authenticated else None,
            parent_log_id=log.parent_log_id,
            root_log_id=budget.root_of(log),
            depth=log.depth,
            retry_of=log,
            dry_run=log.dry_run,
            extra_context={"chain": chain} if chain else None,
            budget_root=budget.root_of(log),
            **refusal,
        )
    if retry.dry_run:
        execute_dry_run(retry)
        retry.refresh_from_db()
    return retry


# --- Executing a run ----------------------------------------------------------------------------
#
# A run's state changes are grouped into as few transactions as correctness allows (on SQLite the
# commits, on PostgreSQL the round trips, were most of a run's cost), and each transaction writes
# the log once, at its end (RunWriter):
#   - the conditions are evaluated before that transaction opens (see execute_run);
#   - the claim, the condition trace, the plan and the database actions up to the first action
#     with outside effects commit together (with the finish when nothing is left), so a worker
#     killed before then leaves the run PENDING with nothing applied;
#   - an action with outside effects (a webhook) commits RUNNING before the call goes out, so a
#     crash shows that it may have happened, and its result on its own (or with the finish);
#   - the database actions after it commit together, up to the next such action.
# Every state change still bumps `seq` and is published, in order, after its commit.


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

    def change(self, *fields: str) -> None:
        self.fields.update(fields)
        self.log.seq += 1
        if fields != ("action_logs",):  # action progress is published as action events
            publish_log(self.log)

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

    def flush(self) -> None:
        if not self.fields:
            return
        log = self.log
        now = timezone.now()
        query = AutomationLog.objects.filter(pk=log.pk)
        if not log.dry_run:
            query = query.filter(seq=self.stored_seq)
        values = {name: getattr(log, name) for name in self.fields}
        if query.update(seq=log.seq, heartbeat_at=now, **values) != 1:
            raise LostClaim(log.pk)
        log.heartbeat_at = now
        self.stored_seq = log.seq
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
            _guarded_update(names, group)
            for writer in group:
                writer.stored_seq = writer.log.seq
                writer.fields.clear()


def _guarded_update(names: tuple[str, ...], writers: list[RunWriter]) -> None:
    """UPDATE each writer's log (seq, heartbeat and `names`) where its seq is still the stored
    one; LostClaim unless every row matched (a batch's runs are real runs, always guarded)."""
    connection = transaction.get_connection()
    quote = connection.ops.quote_name
    meta = AutomationLog._meta
    fields = [meta.get_field(name) for name in ("seq", "heartbeat_at", *names)]
    seq_column = quote(meta.get_field("seq").column)
    sql = (
        f"UPDATE {quote(meta.db_table)} SET "
        + ", ".join(f"{quote(field.column)} = %s" for field in fields)
        + f" WHERE {quote(meta.pk.column)} = %s AND {seq_column} = %s"
    )
    now = timezone.now()
    rows = []
    for writer in writers:
        log = writer.log
        log.heartbeat_at = now
        values = [
            field.get_db_prep_save(getattr(log, field.attname), connection) for field in fields
        ]
        rows.append([*values, log.pk, writer.stored_seq])
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)
        if cursor.rowcount != len(rows):
            raise LostClaim([writer.log.pk for writer in writers])


def claim(log_id: int) -> AutomationLog | None:
    """The PENDING run, locked for this transaction (None when someone else has it or had it)."""
    # The rule comes from rule_definitions; only the user a run acts for is joined. By primary
    # key only (see RunWriter): the status is checked on the row read under the lock, which
    # PostgreSQL re-reads at its latest committed version once the lock is granted.
    found = (
        AutomationLog.objects.select_for_update(skip_locked=True, of=("self",))
        .select_related("triggered_by")
        .filter(pk=log_id)
        .order_by()[:1]  # one row: the model's default ordering would only add a sort
    )
    log = found[0] if found else None
    if log is None or log.status != RunStatus.PENDING or log.dry_run:
        return None
    return log


def execute_run(log_id: int) -> None:
    """Claim and execute one run. Safe to call twice: a second delivery does nothing.

    The conditions are evaluated before the claim's transaction opens, with reads in autocommit
    (see _prepare): on SQLite that transaction holds the database's write lock from BEGIN, and
    a slow rule must not stop every other writer, of every organization, while it is evaluated.
    The claim then checks that the run is as it was read (its seq); if not (the sweeper revived
    it meanwhile), the evaluation is dropped and done again.
    """
    for _attempt in range(EVALUATION_ATTEMPTS):
        logs = _read_pending([log_id])
        if not logs:
            logger.debug("run %s already claimed or finished", log_id)
            return
        try:
            prepared = _prepare(logs[0])
        except Exception as exc:
            _record_failure(log_id, exc)
            return
        if _claim_and_execute(prepared):
            return
    logger.warning("run %s kept changing while it was evaluated; the sweeper retries it", log_id)


def _read_pending(log_ids) -> list[AutomationLog]:
    """The PENDING real runs among `log_ids` as they are now, without a lock, in id order."""
    found = (
        AutomationLog.objects.select_related("triggered_by")
        .filter(pk__in=log_ids)  # by primary key, see claim
        .order_by("pk")
    )
    return [log for log in found if log.status == RunStatus.PENDING and not log.dry_run]


def _lock(log_ids) -> dict[int, tuple[str, int]]:
    """Lock the runs nobody else has locked, for this transaction: {id: (status, seq)}.

    Only the state is read: a run whose seq is still the one its evaluation read is exactly the
    row read then (every writer of a run's state bumps seq). By primary key only (see claim).
    """
    rows = (
        AutomationLog.objects.select_for_update(skip_locked=True)
        .filter(pk__in=log_ids)
        .order_by()
        .values_list("pk", "status", "seq")
    )
    return {pk: (status, seq) for pk, status, seq in rows}


def _claimable(prepared: "_Prepared", locked: dict) -> bool | None:
    """True when the locked run is still the one `prepared` evaluated; None when there is
    nothing to do (another worker has it or had it); False when it changed since it was read."""
    state = locked.get(prepared.log.pk)
    if state is None or state[0] != RunStatus.PENDING:
        return None
    return state[1] == prepared.seq


def _claim_and_execute(prepared: "_Prepared") -> bool:
    """Claim the run and execute it with what `prepared` worked out; False when the run changed
    since it was read, so that work is stale and nothing was done."""
    log_id = prepared.log.pk
    writer = None
    try:
        with transaction.atomic():
            claimable = _claimable(prepared, _lock([log_id]))
            if claimable is None:
                logger.debug("run %s already claimed or finished", log_id)
                return True
            if not claimable:
                return False
            writer = RunWriter(prepared.log)
            plan = _start(writer, prepared)
            if plan is not None:
                plan.run_database_actions()
            writer.flush()
    except Exception as exc:
        if writer is None:
            raise
        # Nothing of the claim's transaction was written (on PostgreSQL the error may have
        # aborted it): claim again, to record the failure.
        writer.rollback()
        _record_failure(log_id, exc, writer)
        return True
    if plan is None:
        return True
    try:
        plan.run_the_rest()
    except LostClaim:
        logger.warning("run %s was taken over by another worker; stopping here", log_id)
    except Exception as exc:
        _fail(writer, exc)
    return True


# --- Executing runs in batches -----------------------------------------------------------------
#
# A burst of triggering writes (a bulk edit) queues many runs at once. A worker takes the runs
# queued behind the one it was handed (automation/tasks.py) and executes those whose actions all
# write the database in one transaction: each run is evaluated beforehand as alone, claimed with
# the others (one SELECT ... FOR UPDATE SKIP LOCKED by primary keys), its actions run as alone
# but without savepoints, and every log is written with its guarded UPDATE before the one
# commit; what they published leaves after it. The first action that fails (RedoAlone) rolls
# the whole batch back, and its runs are executed alone, the careful way (the budget counters
# then count their writes twice: they count attempts). A run ends exactly as it would alone:
# the batch only shares the claim, the commit and the publication. Any other run (a webhook, a
# run that changed since it was read, a batch that failed) is executed alone.


def execute_runs(log_ids: list[int]) -> None:
    """Execute the given runs: the database-only ones together, the others one by one.

    A single database-only run is a batch of one: its actions take no savepoint (two round
    trips on PostgreSQL), and only a failure executes it again the careful way.
    """
    again: list[int] = []  # to read and evaluate again, alone
    together: list[_Prepared] = []
    alone: list[_Prepared] = []
    for log in _read_pending(log_ids):
        try:
            prepared = _prepare(log)
        except Exception:
            again.append(log.pk)  # execute_run evaluates again, and records the failure
            continue
        (together if _database_only(prepared) else alone).append(prepared)
    if together:
        again += _execute_together(together)
    for prepared in alone:
        if not _claim_and_execute(prepared):
            again.append(prepared.log.pk)
    for log_id in sorted(again):
        execute_run(log_id)


def _database_only(prepared: "_Prepared") -> bool:
    """Do all the run's actions write only the database (no webhook to commit before)?"""
    from automation.actions.handlers import get_handler

    return all(
        get_handler(action.action_type).writes_database for action in prepared.definition.actions
    )


def _execute_together(batch: list["_Prepared"]) -> list[int]:
    """Claim and execute `batch` in one transaction; returns the runs left to execute alone
    (those that changed since they were read, or all of them if the batch failed)."""
    stale = []
    try:
        with transaction.atomic():
            locked = _lock([prepared.log.pk for prepared in batch])
            writers = []
            for prepared in batch:
                claimable = _claimable(prepared, locked)
                if claimable is None:
                    continue
                if not claimable:
                    stale.append(prepared.log.pk)
                    continue
                writer = RunWriter(prepared.log, together=True)
                plan = _start(writer, prepared)
                if plan is not None:
                    plan.run_database_actions()
                writers.append(writer)
            RunWriter.flush_many(writers)
    except RedoAlone as exc:
        logger.debug("a batch of %s runs met a failed action (%s): one by one", len(batch), exc)
        return [prepared.log.pk for prepared in batch]
    except Exception:
        logger.exception("a batch of %s runs failed; executing them one by one", len(batch))
        return [prepared.log.pk for prepared in batch]
    return stale


def _record_failure(log_id: int, exc: Exception, writer: RunWriter | None = None) -> None:
    """Claim the run (again) and end it FAILED with `exc`."""
    with transaction.atomic():
        log = claim(log_id)
        if log is None:
            logger.error("run %s failed, and another worker has it now", log_id, exc_info=exc)
            return
        writer = writer or RunWriter(log)
        _mark_running(writer)
        _fail(writer, exc)


def execute_dry_run(log: AutomationLog) -> None:
    """Evaluate and render a MANUAL dry run in place; writes nothing but the log.

    A dry run is executed inside the HTTP request that asked for it. Its conditions and actions
    are worked out outside any transaction (on SQLite a transaction holds the write lock of the
    whole database), within AUTOMATION_DRY_RUN_BUDGET_SECONDS; the log is then written in one
    short transaction, and what the run published is sent once it commits.
    """
    budget = settings.AUTOMATION_DRY_RUN_BUDGET_SECONDS
    deadline = time.monotonic() + budget
    writer = RunWriter(log)
    try:
        with live.hold() as held:
            conditions_budget = min(settings.AUTOMATION_CONDITIONS_BUDGET_SECONDS, budget)
            plan = _start(writer, _prepare(log, budget=conditions_budget))
            if plan is not None:
                plan.deadline = deadline
                plan.run_database_actions()  # in a dry run, no action reaches outside
        with transaction.atomic():
            writer.flush()
            held.publish()
    except Exception as exc:
        writer.rollback()
        _mark_running(writer)
        _fail(writer, exc)


def _mark_running(writer: RunWriter) -> None:
    writer.log.status = RunStatus.RUNNING
    writer.log.started_at = timezone.now()
    writer.change("status", "started_at")


def _fail(writer: RunWriter, exc: Exception) -> None:
    """An unexpected error: the run ends FAILED, and so do its unfinished actions (never left
    RUNNING); its error is a reference to the server log, never the exception's text."""
    error = _internal_error(f"run {writer.log.pk} failed unexpectedly", exc)
    with contextlib.suppress(LostClaim), writer.step():
        _settle_actions(writer, error)
        _finish(writer, RunStatus.FAILED, error=error)


def _internal_error(what: str, exc: Exception) -> str:
    """Log `exc` with a new reference; the error members see, naming only that reference.

    An unexpected exception's text may be the database's (SQL, values of other rows, names of
    tables): it belongs in the server log, which the reference finds.
    """
    reference = uuid.uuid4().hex[:12]
    logger.error("%s (reference %s)", what, reference, exc_info=exc)
    return f"Internal error (reference {reference})."


def _settle_actions(writer: RunWriter, error: str) -> None:
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
        if entry["status"] == ActionStatus.RUNNING:
            _set_entry(writer, entry, status=ActionStatus.FAILED, error=error, finished_at=now)
        elif entry["status"] == ActionStatus.PENDING:
            _set_entry(writer, entry, status=ActionStatus.SKIPPED, error="The run failed.")


@dataclass
class _Prepared:
    """What a run works out before its claim, for the log as it was read (`seq`)."""

    log: AutomationLog
    seq: int
    definition: RuleDefinition
    ctx: RunContext
    result: ConditionResult | None  # None when the run evaluates nothing (see _evaluates)


def _prepare(log: AutomationLog, budget: float | None = None) -> _Prepared:
    """Load the rule and evaluate the conditions the run will record, in whatever transaction
    is open (none for a run: reads in autocommit). The run then uses this definition of the
    rule: what it evaluated is what it executes."""
    from automation.conditions.evaluate import evaluate_conditions

    definition = rule_definition(log.rule_id)
    rule = definition.rule
    ctx = _context(log, rule)
    result = None
    if _evaluates(log, rule):
        result = evaluate_conditions(rule, ctx, definition.tree, budget=budget)
    return _Prepared(log=log, seq=log.seq, definition=definition, ctx=ctx, result=result)


def _evaluates(log: AutomationLog, rule: AutomationRule) -> bool:
    """Does the run evaluate its conditions (the rule live, and not a resumed run)?"""
    if rule.deleted_at is not None:
        return False
    if not rule.is_active and log.trigger != TriggerType.MANUAL:
        return False
    return not _resuming(log)


def _resuming(log: AutomationLog) -> bool:
    """A run that already recorded its plan: its conditions were met and are not evaluated again."""
    return bool(log.action_logs) and bool(log.conditions_met)


def _start(writer: RunWriter, prepared: _Prepared) -> "_Plan | None":
    """Mark the run RUNNING, check the rule, record the conditions' verdict and the plan; None
    when the run is over."""
    log = writer.log
    definition = prepared.definition
    rule = log.rule = definition.rule
    _mark_running(writer)
    if rule.deleted_at is not None:
        return _finish(
            writer, RunStatus.SKIPPED, error="The rule was deleted before the run started."
        )
    if not rule.is_active and log.trigger != TriggerType.MANUAL:
        return _finish(
            writer, RunStatus.SKIPPED, error="The rule was deactivated before the run started."
        )
    log.rule_revision = rule.revision
    actions = list(definition.actions)
    if not _resuming(log):
        result = prepared.result
        log.conditions_met = result.met
        log.condition_trace = result.trace
        if not result.met:
            return _finish(writer, RunStatus.SKIPPED, error=_not_met_reason(result))
        log.action_logs = [_new_entry(index, action) for index, action in enumerate(actions)]
        writer.change("rule_revision", "conditions_met", "condition_trace", "action_logs")
    # The rule may have gained actions since the run started: keep to the recorded plan.
    return _Plan(writer, prepared.ctx, actions[: len(log.action_logs)])


def _not_met_reason(result) -> str:
    """The SKIPPED run's error: why its conditions did not hold. A leaf that could not be
    evaluated is named (the first, and how many more), since "not met" would hide a broken rule;
    "Conditions not met." is left for a tree that evaluated cleanly to false."""
    if result.error:
        return f"Conditions could not be evaluated: {result.error}"
    if result.budget_error:
        return result.budget_error
    failed = [(number, entry) for number, entry in enumerate(result.trace, 1) if entry["error"]]
    if not failed:
        return "Conditions not met."
    number, entry = failed[0]
    reason = f"Condition {number} of {len(result.trace)} ({entry['path']}): {entry['error']}"
    if len(failed) > 1:
        more = len(failed) - 1
        reason += f" (and {more} more condition{'s' if more > 1 else ''} with an error)"
    return reason


class _Plan:
    """The run's unfinished actions, executed in order, then the finish.

    Database actions run in whatever transaction is open (the claim's, or the one recording the
    outside action before them); an action with outside effects ends it first (see "Executing a
    run" above).
    """

    def __init__(self, writer: RunWriter, ctx: RunContext, actions: list):
        from automation.actions.handlers import get_handler

        self.writer, self.ctx, self.actions = writer, ctx, actions
        self.failures, self.stopped, self.done = 0, False, False
        self.deadline: float | None = None  # a dry run's: actions after it are not rendered
        self.todo: list[int] = []
        log = writer.log
        for index, action in enumerate(actions):
            entry = log.action_logs[index]
            if entry["status"] in FINISHED_ACTION_STATUSES:  # a resumed run: already done
                ctx.results[index] = entry.get("result")
                if entry["status"] == ActionStatus.FAILED:
                    self.failures += 1
                    self.stopped = self.stopped or not action.continue_on_failure
            else:
                self.todo.append(index)
        self.todo.reverse()  # popped from the end, in order
        self.handlers = {index: get_handler(actions[index].action_type) for index in self.todo}

    def _reaches_outside(self, index: int) -> bool:
        return not self.handlers[index].writes_database and not self.writer.log.dry_run

    def run_database_actions(self) -> None:
        """Run actions while they are database actions; finish the run if none are left."""
        while self.todo and not self.stopped and not self._reaches_outside(self.todo[-1]):
            index = self.todo.pop()
            started = _begin(self.writer, self.ctx, index)
            if self.deadline is not None and time.monotonic() >= self.deadline:
                outcome = (ActionStatus.FAILED, None, _dry_run_budget_error())
            else:
                outcome = _call(
                    self.writer, self.ctx, self.actions[index], index, self.handlers[index]
                )
            self._record(index, started, outcome)
        self._finish_if_over()

    def _finish_if_over(self) -> None:
        """Once a failure stopped the run or nothing is left: skip the rest and finish."""
        if self.stopped or not self.todo:
            _conclude(self.writer, self.failures, self.stopped)
            self.done = True

    def run_the_rest(self) -> None:
        """After the claim's transaction: each outside action, then the database actions after it.

        An outside action's result commits on its own (with the finish when it is the last), so
        a crash in a later database action does not make it run again.
        """
        while not self.done:
            index = self.todo.pop()
            handler = self.handlers[index]
            with self.writer.step():  # RUNNING is committed before the call goes out
                started = _begin(self.writer, self.ctx, index)
            outcome = _call(self.writer, self.ctx, self.actions[index], index, handler)
            with self.writer.step():
                self._record(index, started, outcome)
                self._finish_if_over()
            if not self.done and not self._reaches_outside(self.todo[-1]):
                with self.writer.step():
                    self.run_database_actions()

    def _record(self, index: int, started: float, outcome: tuple) -> None:
        status, result, error = outcome
        result, error = without_nul(result), without_nul(error)  # outside text, for PostgreSQL
        _set_entry(
            self.writer,
            self.writer.log.action_logs[index],
            status=status,
            result=result,
            error=error,
            finished_at=timezone.now().isoformat(),
            duration_ms=round((time.monotonic() - started) * 1000, 3),
        )
        if status == ActionStatus.SUCCEEDED:
            self.ctx.results[index] = result
        else:
            self.failures += 1
            self.stopped = not self.actions[index].continue_on_failure


def _dry_run_budget_error() -> str:
    return (
        "Not rendered: the dry run's time budget of "
        f"{settings.AUTOMATION_DRY_RUN_BUDGET_SECONDS:g} s (AUTOMATION_DRY_RUN_BUDGET_SECONDS) "
        "was spent."
    )


def _begin(writer: RunWriter, ctx: RunContext, index: int) -> float:
    """Mark an action RUNNING (a new attempt); returns its start on the monotonic clock."""
    entry = writer.log.action_logs[index]
    entry.update(status=ActionStatus.RUNNING, started_at=timezone.now().isoformat(), error=None)
    if not writer.log.dry_run:
        entry["attempt"] = entry.get("attempt", 0) + 1
    _set_entry(writer, entry)
    ctx.action_order = index
    return time.monotonic()


def _call(writer: RunWriter, ctx: RunContext, action, index: int, handler) -> tuple:
    """Execute (or dry-run) one action: (status, result, error).

    A database action runs in a savepoint, so a failure leaves none of its writes behind; in a
    batch it takes none (two round trips per run on PostgreSQL) and a failure raises RedoAlone
    instead: the whole batch rolls back, and each run is executed again alone.
    """
    from automation.actions.handlers import ActionError

    log = writer.log
    entry = log.action_logs[index]

    def on_attempt(attempt: int) -> None:
        if attempt != entry["attempt"]:
            with writer.step():
                _set_entry(writer, entry, attempt=attempt)

    try:
        if log.dry_run:
            return ActionStatus.SUCCEEDED, handler.dry_run(action.parameters, ctx), None
        chain = Chain(
            log_id=log.pk,
            root_log_id=budget.root_of(log),
            depth=log.depth,
            rule_id=log.rule_id,
            rule_names=(*(log.context or {}).get("chain", ()), log.rule.name),
            user_id=log.triggered_by_id,
        )
        with running(chain), acting_as(log.triggered_by):
            if handler.writes_database:
                with transaction.atomic(savepoint=not writer.together):
                    return ActionStatus.SUCCEEDED, handler.execute(action.parameters, ctx), None
            result = handler.execute(action.parameters, ctx, on_attempt=on_attempt)
            return ActionStatus.SUCCEEDED, result, None
    except LostClaim:
        raise
    except Exception as exc:
        if writer.together:
            raise RedoAlone(f"action {index} of run {log.pk}: {type(exc).__name__}") from exc
        if isinstance(exc, ActionError):
            return ActionStatus.FAILED, exc.result, str(exc)
        return (
            ActionStatus.FAILED,
            None,
            _internal_error(f"action {index} of run {log.pk} failed unexpectedly", exc),
        )


def _conclude(writer: RunWriter, failures: int, stopped: bool) -> None:
    """Skip what a failure stopped, then finish with the run's overall status (a FAILED or
    PARTIAL run's error names its failed actions)."""
    if stopped:
        for entry in writer.log.action_logs:
            if entry["status"] not in FINISHED_ACTION_STATUSES:
                _set_entry(
                    writer, entry, status=ActionStatus.SKIPPED, error="An earlier action failed."
                )
        status = RunStatus.FAILED
    elif failures:
        status = RunStatus.PARTIAL
    else:
        status = RunStatus.SUCCEEDED
    _finish(writer, status, error=_failed_actions(writer.log.action_logs))


# An action's error in the run's error (the action log keeps it whole).
RUN_ERROR_MAX_ACTION_ERROR = 500


def _failed_actions(action_logs: list[dict]) -> str:
    """One 'Action 2 (CALL_WEBHOOK) failed: HTTP 502' per failed action; "" when none failed."""
    failed = []
    for entry in action_logs:
        if entry["status"] != ActionStatus.FAILED:
            continue
        reason = entry.get("error") or "no reason recorded"
        if len(reason) > RUN_ERROR_MAX_ACTION_ERROR:
            reason = f"{reason[:RUN_ERROR_MAX_ACTION_ERROR]}... ({len(reason)} characters)"
        failed.append(f"Action {entry['order']} ({entry['action_type']}) failed: {reason}")
    return "; ".join(failed)


def _context(log: AutomationLog, rule: AutomationRule) -> RunContext:
    return RunContext(
        organization_id=log.organization_id,
        rule_id=rule.pk,
        rule_name=rule.name,
        trigger=log.trigger,
        event=log.event,
        model=log.object_type,
        object_id=log.object_id,
        object=(log.context or {}).get("object"),
        changes=log.changes,
        user_id=log.triggered_by_id,
        log_id=log.pk,
        dry_run=log.dry_run,
        now=timezone.now(),
        timezone=rule.timezone,
    )


def _new_entry(index: int, action) -> dict:
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


def _set_entry(writer: RunWriter, entry: dict, **changes) -> None:
    entry.update(changes)
    writer.change("action_logs")
    publish_action(writer.log, entry)


def _finish(writer: RunWriter, status: str, error: str = "") -> None:
    log = writer.log
    log.status = status
    log.finished_at = timezone.now()
    if error:
        log.error = error
    fields = ["status", "finished_at", "error", "rule_revision"]
    if status == RunStatus.SKIPPED:
        fields += ["conditions_met", "condition_trace"]
    writer.change(*fields)


# --- The sweeper --------------------------------------------------------------------------------


def sweep(batch_size: int = 500) -> dict:
    """Recover runs nobody is working on.

    RUNNING logs whose heartbeat stopped (their worker died) go back to PENDING, to be resumed at
    their first unfinished action; PENDING logs no worker claimed in time are enqueued again (a
    duplicate delivery is harmless: the claim lets one through).
    """
    now = timezone.now()
    stale = now - datetime.timedelta(seconds=settings.AUTOMATION_HEARTBEAT_STALE_SECONDS)
    revived = 0
    stalled = AutomationLog.objects.filter(
        status=RunStatus.RUNNING, dry_run=False, heartbeat_at__lt=stale
    )
    for log_id in stalled.values_list("pk", flat=True)[:batch_size]:
        with transaction.atomic():
            if stalled.filter(pk=log_id).update(status=RunStatus.PENDING, seq=F("seq") + 1):
                revived += 1
                publish_log(AutomationLog.objects.select_related("rule").get(pk=log_id))
    waiting = now - datetime.timedelta(seconds=settings.AUTOMATION_SWEEP_PENDING_AFTER_SECONDS)
    pending = list(
        AutomationLog.objects.filter(
            status=RunStatus.PENDING, dry_run=False, created_at__lt=waiting
        )
        .order_by("created_at")
        .values_list("organization_id", "pk")[: _queue_room(batch_size)]
    )
    by_organization = collections.defaultdict(list)
    for organization_id, log_id in pending:
        by_organization[organization_id].append(log_id)
    for organization_id, log_ids in by_organization.items():
        enqueue_runs(organization_id, log_ids)
    if revived or pending:
        logger.info(
            "sweeper: %s stalled runs revived, %s pending runs re-enqueued", revived, len(pending)
        )
    return {"revived": revived, "requeued": len(pending)}


def _queue_room(limit: int) -> int:
    """How many PENDING runs the sweeper may enqueue now: `limit` minus the tasks still queued.

    An old PENDING log is either lost (broker restarted, worker killed) or still waiting behind a
    backlog; the two look the same from the database. Re-enqueueing the waiting ones too would add
    up to `limit` duplicates per sweep to a queue that is already behind (the reliability drill
    saw 7,500 enqueues for 600 runs). Bounding by the queue's depth keeps the duplicates to
    `limit`; the lost runs, oldest first, are enqueued once the backlog has drained below it.
    """
    from huey.contrib.djhuey import HUEY

    from automation.runs.queue import fair_queues

    try:
        queued = fair_queues(HUEY).size()
    except Exception:
        logger.warning("sweeper: the queue does not answer; nothing re-enqueued this time")
        return 0
    return max(limit - queued, 0)
