"""Executing a run: evaluate, claim, execute its actions (runs/plan.py), alone or in batches.

The life of a run (ARCHITECTURE.md): the conditions of a PENDING run are evaluated (outside any
transaction), the log is claimed (SELECT ... FOR UPDATE SKIP LOCKED) and the verdict recorded,
then its actions run in order. Every state change bumps the log's `seq` and is published after
commit; the changes are written with one guarded UPDATE per transaction (the worker must still own
the run), in few transactions (see "Executing a run"). A database action commits in the same
transaction as its SUCCEEDED entry, so a run that is resumed after its worker died never applies
it twice. No exception leaves a log RUNNING.
"""

import datetime
import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from automation.conditions.tree import ConditionResult
from automation.core.choices import RunStatus, TriggerType
from automation.core.context import RunContext
from automation.core.models import AutomationLog, AutomationRule
from automation.index.definitions import RuleDefinition, rule_definition
from automation.live import events as live
from automation.runs import outside_batch, reads, waits
from automation.runs.plan import Plan, RedoAlone, log_context
from automation.runs.writer import (
    LostClaim,
    RunWriter,
    fail_unexpectedly,
    finish,
    mark_running,
    new_entry,
)

logger = logging.getLogger("automation.runs.execute")


EVALUATION_ATTEMPTS = 3

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
#     crash shows that it may have happened: with whatever precedes it (the claim, the database
#     actions before it, the previous webhook's result), not in a commit of its own ahead of the
#     call; its result commits on its own (or with the finish, or the next webhook's start);
#     in a batch of such runs, the RUNNING entries commit together, then the results together
#     (runs/outside_batch.py);
#   - the database actions after it commit together, up to the next such action.
# Every state change still bumps `seq` and is published, in order, after its commit.


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
    (see prepare): on SQLite that transaction holds the database's write lock from BEGIN, and
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
            prepared = prepare(logs[0])
        except Exception as exc:
            _record_failure(log_id, exc)
            return
        if _claim_and_execute(prepared):
            return
    logger.warning("run %s kept changing while it was evaluated; the sweeper retries it", log_id)


def _read_pending(log_ids) -> list[AutomationLog]:
    """The PENDING real runs among `log_ids` as they are now, without a lock, in id order
    (by primary key, see claim; compiled once per process, runs/reads.py)."""
    return [
        log
        for log in reads.read_logs(log_ids)
        if log.status == RunStatus.PENDING and not log.dry_run
    ]


def _lock(log_ids) -> dict[int, tuple[str, int]]:
    """Lock the runs nobody else has locked, for this transaction: {id: (status, seq)}.

    Only the state is read: a run whose seq is still the one its evaluation read is exactly the
    row read then (every writer of a run's state bumps seq). By primary key only (see claim).
    """
    return reads.lock_states(log_ids)


def _claimable(prepared: "Prepared", locked: dict) -> bool | None:
    """True when the locked run is still the one `prepared` evaluated; None when there is
    nothing to do (another worker has it or had it); False when it changed since it was read."""
    state = locked.get(prepared.log.pk)
    if state is None or state[0] != RunStatus.PENDING:
        return None
    return state[1] == prepared.seq


def _claim_and_execute(prepared: "Prepared") -> bool:
    """Claim the run and execute it with what `prepared` worked out; False when the run changed
    since it was read, so that work is stale and nothing was done."""
    with log_context(prepared.log):
        return _claim_and_execute_now(prepared)


def _claim_and_execute_now(prepared: "Prepared") -> bool:
    log_id = prepared.log.pk
    writer = None
    claimed_by_its_write = _writes_nothing_but_its_log(prepared)
    try:
        with transaction.atomic():
            if not claimed_by_its_write:
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
                plan.begin_outside_action()  # a webhook next: RUNNING with the claim
            writer.flush()
    except LostClaim:
        if not claimed_by_its_write:
            raise
        # Claimed, finished or revived since it was read: read it again (execute_run).
        writer.rollback()
        return False
    except Exception as exc:
        if writer is None:
            raise
        # Nothing of the claim's transaction was written (on PostgreSQL the error may have
        # aborted it): claim again, to record the failure.
        writer.rollback()
        _record_failure(log_id, exc, writer)
        return True
    if plan is not None:
        outside_batch.continue_alone(plan)
    return True


def _writes_nothing_but_its_log(prepared: "Prepared") -> bool:
    """Does the claim's transaction write nothing but the run's log: skipped, held, or its first
    action reaching outside (marked RUNNING there)? Then no lock is taken first: the guarded
    UPDATE of the log (its seq still the one read) is the claim, one round trip fewer on the
    path to a webhook. A run that would execute a database action is locked first, so the
    action never runs for a run someone else has."""
    from automation.actions.handlers import get_handler

    log, result = prepared.log, prepared.result
    if log.dry_run or prepared.recheck is not None or _resuming(log):
        return False
    if result is None or not result.met or prepared.definition.rule.hold_for:
        return True  # skipped (the rule deleted or inactive, conditions not met) or held
    actions = prepared.definition.actions
    return not actions or get_handler(actions[0].action_type).reaches_outside(actions[0].parameters)


# --- Executing runs in batches -----------------------------------------------------------------
#
# A burst of triggering writes (a bulk edit) queues many runs at once. A worker takes a batch of
# one organization's queued runs (runs/worker.py, runs/fair_queue.py) and executes those whose actions all
# write the database in one transaction: each run is evaluated beforehand as alone, claimed with
# the others (one SELECT ... FOR UPDATE SKIP LOCKED by primary keys), its actions run as alone
# but without savepoints, and every log is written with its guarded UPDATE before the one
# commit; what they published leaves after it. The first action that fails (RedoAlone) rolls
# the whole batch back, and its runs are executed alone, the careful way (the budget counters
# then count their writes twice: they count attempts). A run ends exactly as it would alone:
# the batch only shares the claim, the commit and the publication. The runs that reach outside (a
# webhook, an e-mail) are batched apart: one transaction claims them with their calls' RUNNING
# entries, the calls go out, one transaction records their outcomes (runs/outside_batch.py). A
# run that changed since it was read, every run of a batch that failed, and a lone run that
# reaches outside are executed alone.


def execute_runs(log_ids: list[int]) -> None:
    """Execute the given runs: the database-only ones together, those reaching outside together
    apart (more than one), the others one by one.

    A single database-only run is a batch of one: its actions take no savepoint (two round
    trips on PostgreSQL), and only a failure executes it again the careful way.
    """
    again: list[int] = []  # to read and evaluate again, alone
    together: list[Prepared] = []
    outside: list[Prepared] = []
    for log in _read_pending(log_ids):
        try:
            prepared = prepare(log)
        except Exception:
            again.append(log.pk)  # execute_run evaluates again, and records the failure
            continue
        (together if _database_only(prepared) else outside).append(prepared)
    if together:
        again += _execute_together(together)
    if len(outside) > 1:
        again += _execute_together(outside, reaching_outside=True)
    elif outside and not _claim_and_execute(outside[0]):
        again.append(outside[0].log.pk)
    for log_id in sorted(again):
        execute_run(log_id)


def _database_only(prepared: "Prepared") -> bool:
    """Do all the run's actions stay in the database (no webhook or e-mail to commit before)?"""
    from automation.actions.handlers import get_handler

    return not any(
        get_handler(action.action_type).reaches_outside(action.parameters)
        for action in prepared.definition.actions
    )


def _execute_together(batch: list["Prepared"], reaching_outside: bool = False) -> list[int]:
    """Claim and execute `batch` in one transaction; returns the runs left to execute alone
    (those that changed since they were read, or all of them if the batch failed).
    `reaching_outside`: each run's first outside action is marked RUNNING in it, and the calls
    and what follows are runs/outside_batch.py's once it commits."""
    stale, plans = [], []
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
                with log_context(prepared.log):
                    plan = _start(writer, prepared)
                    if plan is not None:
                        plan.run_database_actions()
                        if reaching_outside:
                            plan.begin_outside_action()
                            plans.append(plan)
                writer.publish_pending()  # each run's events together, as alone
                writers.append(writer)
            RunWriter.flush_many(writers)
    except RedoAlone as exc:
        logger.debug("a batch of %s runs met a failed action (%s): one by one", len(batch), exc)
        return [prepared.log.pk for prepared in batch]
    except Exception:
        logger.exception("a batch of %s runs failed; executing them one by one", len(batch))
        return [prepared.log.pk for prepared in batch]
    if plans:
        outside_batch.call_and_record(plans)
    return stale


def _record_failure(log_id: int, exc: Exception, writer: RunWriter | None = None) -> None:
    """Claim the run (again) and end it FAILED with `exc`."""
    with transaction.atomic():
        log = claim(log_id)
        if log is None:
            logger.error("run %s failed, and another worker has it now", log_id, exc_info=exc)
            return
        writer = writer or RunWriter(log)
        mark_running(writer)
        fail_unexpectedly(writer, exc)


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
            plan = _start(writer, prepare(log, budget=conditions_budget))
            if plan is not None:
                plan.deadline = deadline
                plan.run_database_actions()  # in a dry run, no action reaches outside
            writer.publish_pending()  # held with the others, in order
        with transaction.atomic():
            writer.flush()
            held.publish()
    except Exception as exc:
        writer.rollback()
        mark_running(writer)
        fail_unexpectedly(writer, exc)


@dataclass
class Prepared:
    """What a run works out before its claim, for the log as it was read (`seq`)."""

    log: AutomationLog
    seq: int
    definition: RuleDefinition
    ctx: RunContext
    result: ConditionResult | None  # None when the run evaluates nothing (see _evaluates)
    # A run back from its hold: the record as it is now, which `result` checked (waits.py).
    recheck: waits.Recheck | None = None
    checked_at: datetime.datetime | None = None


def prepare(log: AutomationLog, budget: float | None = None) -> Prepared:
    """Load the rule and evaluate the conditions the run will record, in whatever transaction
    is open (none for a run: reads in autocommit). The run then uses this definition of the
    rule: what it evaluated is what it executes. A run back from its hold evaluates them
    against its record as it is now (runs/waits.py)."""
    from automation.conditions.evaluate import evaluate_conditions

    definition = rule_definition(log.rule_id)
    rule = definition.rule
    ctx = run_context(log, rule)
    result = recheck = checked_at = None
    if _evaluates(log, rule):
        if waits.holding(log):
            recheck, checked_at = waits.Recheck(log), timezone.now()
            if recheck.deleted:
                return Prepared(log, log.seq, definition, ctx, None, recheck, checked_at)
            ctx.object, ctx.changes, ctx.now = recheck.object, recheck.changes, checked_at
        result = evaluate_conditions(rule, ctx, definition.tree, budget=budget)
    return Prepared(log, log.seq, definition, ctx, result, recheck, checked_at)


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


def _start(writer: RunWriter, prepared: Prepared) -> "Plan | None":
    """Mark the run RUNNING, check the rule, record the conditions' verdict and the plan; None
    when the run is over."""
    log = writer.log
    definition = prepared.definition
    rule = log.rule = definition.rule
    mark_running(writer)
    when = "while the run waited" if log.resume_at else "before the run started"
    if rule.deleted_at is not None:
        return finish(writer, RunStatus.SKIPPED, error=f"The rule was deleted {when}.")
    if not rule.is_active and log.trigger != TriggerType.MANUAL:
        return finish(writer, RunStatus.SKIPPED, error=f"The rule was deactivated {when}.")
    log.rule_revision = rule.revision
    actions = list(definition.actions)
    if not _resuming(log):
        recorded = ("rule_revision", "conditions_met", "condition_trace")
        if prepared.recheck is not None:
            reason, rechecked = waits.record_recheck(
                writer, prepared.recheck, prepared.result, prepared.checked_at
            )
            if reason:
                return finish(writer, RunStatus.SKIPPED, reason, *rechecked)
            recorded = ("rule_revision", *rechecked)
        else:
            result = prepared.result
            log.conditions_met = result.met
            log.condition_trace = result.trace
            if not result.met:
                return finish(writer, RunStatus.SKIPPED, error=_not_met_reason(result))
            if rule.hold_for and not log.dry_run:
                waits.start_hold(writer, rule.hold_for, *recorded)
                return None  # WAITING: the actions run after the second check
            if rule.hold_for:
                waits.start_hold(writer, rule.hold_for)  # notes what a real run would do
        log.action_logs = [new_entry(index, action) for index, action in enumerate(actions)]
        writer.change(*recorded, "action_logs")
    # The rule may have gained actions since the run started: keep to the recorded plan.
    return Plan(writer, prepared.ctx, actions[: len(log.action_logs)])


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


def run_context(log: AutomationLog, rule: AutomationRule) -> RunContext:
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
        payload=(log.context or {}).get("payload"),
        user_id=log.triggered_by_id,
        log_id=log.pk,
        run_key=log.run_key(),
        dry_run=log.dry_run,
        now=timezone.now(),
        timezone=rule.timezone,
    )
