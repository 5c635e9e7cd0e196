"""The scheduler tick: due slots of SCHEDULE rules become runs (fire times: fire_times.py).

The tick (every minute, any number of schedulers): due rules are found through the partial index
`rule_due_schedule_idx` (next_run_at <= now among active SCHEDULE rules), so its cost grows with
the due rules, not with all rules. Each due rule is handled in its own transaction, locked with
SKIP LOCKED where the database can (PostgreSQL), and every slot's log carries `scheduled_for`: the
unique (rule, scheduled_for) constraint makes a second scheduler's insert for the same slot fail,
and that slot is skipped inside a savepoint. Then next_run_at moves to the first fire time after
now and last_run_at to the latest slot fired.

Missed slots (downtime) follow the rule's missed_run_policy: LATEST runs the latest due slot once,
SKIP runs a slot only if it is on time (within AUTOMATION_SCHEDULE_GRACE_SECONDS, default 120),
ALL runs every due slot, at most AUTOMATION_MISSED_RUNS_MAX (the latest ones).

A rule with a model runs once per record of its organization that meets its conditions. The unique
constraint allows one log per slot, so the slot's log is a finished "fan-out" log (SUCCEEDED, or
SKIPPED when no record matched) carrying scheduled_for and counts, and each record's run is a
PENDING child log (parent_log and root_log = the fan-out log, scheduled_for in its context); the
slot is one fan-out budget tree, with the slot budgets (automation/fanout/budget.py).
Records are examined in primary-key order in chunks, at most AUTOMATION_SCHEDULE_MAX_RECORDS per
slot; when that bound cuts the slot short, the fan-out log says so in its error and context.

A SCHEDULE rule can also be fired by hand (`fire_now`, the API's runSchedule) through the same
code as a slot (`_fire`): the same run, or the same fan-out, but with the MANUAL trigger (so a
paused rule runs, as with runRule), the user who asked, and no `scheduled_for`, so it takes no
slot (nothing for the unique constraint to refuse) and moves neither next_run_at nor last_run_at.
Its records are examined inside the request that asked, so within a time budget.
"""

import datetime
import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from automation.core.choices import MissedRunPolicy, RunStatus, TriggerType
from automation.core.models import AutomationRule
from automation.core.registry import get_automatable, model_label
from automation.fanout import budget
from automation.triggers.fire_times import ScheduleError, compute_next_run_at, fires_since

logger = logging.getLogger("automation.triggers.schedules")


FANOUT_CHUNK = 200

# --- The tick ------------------------------------------------------------------------------------


def due_rules(now):
    """Active SCHEDULE rules whose next_run_at has come (served by rule_due_schedule_idx)."""
    return AutomationRule.objects.filter(
        trigger_type=TriggerType.SCHEDULE,
        is_active=True,
        deleted_at__isnull=True,
        next_run_at__lte=now,
    )


def tick(now=None, batch_size: int = 500) -> dict:
    """Fire every due slot of every due rule (at most `batch_size` rules per call)."""
    now = now or timezone.now()
    due = list(due_rules(now).order_by("next_run_at").values_list("pk", flat=True)[:batch_size])
    rules = runs = 0
    for rule_id in due:
        try:
            fired = _fire_due_rule(rule_id, now)
        except ScheduleError as exc:
            # Fail closed: a schedule that cannot produce fire times stops until it is edited.
            logger.error("scheduler: rule %s has an unusable schedule (%s); stopped", rule_id, exc)
            AutomationRule.objects.filter(pk=rule_id).update(next_run_at=None)
            continue
        except Exception:
            # Left due: the next tick tries again; other rules go on.
            logger.exception("scheduler: rule %s could not be fired", rule_id)
            continue
        if fired is not None:
            rules += 1
            runs += fired
    if rules:
        logger.info("scheduler: %s due rule(s), %s run(s) created", rules, runs)
    return {"rules": rules, "runs": runs}


# How many times a due rule is prepared again when it changed between that and its lock.
PREPARE_ATTEMPTS = 3


def _fire_due_rule(rule_id: int, now) -> int | None:
    """Fire one due rule's slots and advance it; None when another scheduler had it.

    The slots and, for a rule with a model, the records meeting its conditions are worked out
    before the rule's transaction opens (reads in autocommit): on SQLite that transaction holds
    the database's write lock, and evaluating up to AUTOMATION_SCHEDULE_MAX_RECORDS records must
    not stop every other writer meanwhile. The transaction then locks the rule and checks that it
    is as it was read (next_run_at, revision); if not, the work is done again.
    """
    for _attempt in range(PREPARE_ATTEMPTS):
        rule = due_rules(now).filter(pk=rule_id).select_related("content_type").first()
        if rule is None:
            return None  # another scheduler has already advanced it
        slots = _slots_to_fire(rule, now)
        matches = None
        if slots and rule.content_type_id is not None:
            matches = _matching_records(rule, now)
        with transaction.atomic():
            locked = (
                due_rules(now)
                .filter(pk=rule_id)
                .select_for_update(skip_locked=True, of=("self",))
                .first()
            )
            if locked is None:
                return None  # another scheduler holds it, or has already advanced it
            if _state(locked) != _state(rule):
                continue  # edited since it was read: prepare again
            created = 0
            fired = []
            for slot in slots:
                count = _fire_slot(rule, slot, matches)
                if count is not None:
                    created += count
                    fired.append(slot)
            updates = {"next_run_at": compute_next_run_at(rule, after=now)}
            if fired:
                updates["last_run_at"] = fired[-1]
            AutomationRule.objects.filter(pk=rule.pk).update(**updates)
            return created
    logger.warning("scheduler: rule %s kept changing while it was prepared; next tick", rule_id)
    return None


def _state(rule: AutomationRule) -> tuple:
    """What the slots and the records to fan out to were worked out from."""
    return (rule.next_run_at, rule.revision, rule.content_type_id, rule.missed_run_policy)


def _slots_to_fire(rule: AutomationRule, now) -> list:
    start = rule.next_run_at
    if rule.missed_run_policy == MissedRunPolicy.ALL:
        limit = settings.AUTOMATION_MISSED_RUNS_MAX
        slots, cut = fires_since(rule, start, now, limit)
        if cut:
            logger.warning(
                "rule %s missed more than %s slots; only the latest %s run", rule.pk, limit, limit
            )
        return slots
    slots, _ = fires_since(rule, start, now, 1)
    if rule.missed_run_policy == MissedRunPolicy.SKIP:
        grace = datetime.timedelta(seconds=settings.AUTOMATION_SCHEDULE_GRACE_SECONDS)
        return [slot for slot in slots if now - slot <= grace]
    return slots  # LATEST


def _fire_slot(rule: AutomationRule, slot, matches) -> int | None:
    """Create the slot's run(s); None when the slot had already been fired (another scheduler).

    `matches`: for a rule with a model, what _matching_records found (the same for every slot
    of this tick: they are evaluated at the same `now`)."""
    try:
        with transaction.atomic():  # a savepoint: a duplicate slot undoes only itself
            _fire(rule, slot, matches)
    except IntegrityError:
        logger.info("rule %s slot %s was already fired by another scheduler", rule.pk, slot)
        return None
    return 1 if matches is None else len(matches.matched)


def _fire(rule: AutomationRule, slot, matches, *, trigger=TriggerType.SCHEDULE, user_id=None):
    """The runs of one firing (a slot, or `slot` None for a firing by hand): the log returned.

    Without a model, one PENDING run. With a model, `_fan_out`. Call inside a transaction.
    """
    from automation.runs.create import create_run

    if rule.content_type_id is None:
        return create_run(
            rule,
            trigger=trigger,
            scheduled_for=slot,
            user_id=user_id,
            extra_context={"scheduled_for": _iso(slot)},
        )
    return _fan_out(rule, slot, matches, trigger=trigger, user_id=user_id)


def _iso(slot) -> str | None:
    return slot.isoformat() if slot is not None else None


def _fan_out(rule: AutomationRule, slot, matches, *, trigger, user_id):
    """One PENDING child run per record meeting the conditions, under a finished slot log,
    which is returned."""
    from automation.runs.create import create_run

    summary = {
        "scheduled_for": _iso(slot),
        "records_examined": matches.examined,
        "records_matched": len(matches.matched),
        "truncated": matches.cut is not None,
    }
    messages = [matches.cut] if matches.cut else []
    if not matches.matched and (matches.examined or not matches.cut):
        messages.append("No record met the conditions.")
    parent = create_run(
        rule,
        trigger=trigger,
        content_type=rule.content_type,
        scheduled_for=slot,
        status=RunStatus.SUCCEEDED if matches.matched else RunStatus.SKIPPED,
        error=" ".join(messages),
        user_id=user_id,
        extra_context=summary,
    )
    if matches.matched:
        budget.open_tree(parent.pk)  # one tree for the whole slot (automation/fanout/budget.py)
    for object_id, object_snapshot in matches.matched:
        create_run(
            rule,
            trigger=trigger,
            content_type=rule.content_type,
            object_id=object_id,
            object_snapshot=object_snapshot,
            parent_log_id=parent.pk,
            root_log_id=parent.pk,
            user_id=user_id,
            extra_context={"scheduled_for": _iso(slot)},
            budget_root=parent.pk,
        )
    return parent


@dataclass
class Matches:
    """The records of a fan-out: [(pk, snapshot)] meeting the conditions, how many were
    examined, and why the examination stopped short (None when every record was examined)."""

    matched: list
    examined: int
    cut: str | None = None


def _matching_records(rule: AutomationRule, now, deadline: float | None = None) -> Matches:
    """The organization's records meeting the rule's conditions, in primary-key order, at most
    AUTOMATION_SCHEDULE_MAX_RECORDS; with a `deadline` (time.monotonic()), only those examined
    before it (a firing by hand, evaluated inside a request)."""
    from automation.conditions import cpu_budget
    from automation.conditions.evaluate import evaluate_conditions
    from automation.conditions.tree import load_condition_tree
    from automation.core.context import RunContext
    from automation.core.snapshots import snapshot

    model = rule.content_type.model_class()
    label = model_label(model)
    tree = load_condition_tree(rule)
    limit = settings.AUTOMATION_SCHEDULE_MAX_RECORDS
    lookup = get_automatable(label).organization_lookup
    records = model._base_manager.filter(**{lookup: rule.organization_id}).order_by("pk")
    found = Matches(matched=[], examined=0)
    last_pk = None
    while found.examined < limit:
        chunk = records if last_pk is None else records.filter(pk__gt=last_pk)
        batch = list(chunk[: min(FANOUT_CHUNK, limit - found.examined)])
        if not batch:
            return found
        for instance in batch:
            budget = None
            if deadline is not None:
                budget = min(
                    settings.AUTOMATION_CONDITIONS_BUDGET_SECONDS, deadline - time.monotonic()
                )
            if budget is not None and budget <= 0:
                found.cut = _out_of_time(found.examined)
                return found
            object_snapshot = snapshot(instance)
            ctx = RunContext(
                organization_id=rule.organization_id,
                rule_id=rule.pk,
                rule_name=rule.name,
                trigger=TriggerType.SCHEDULE,
                model=label,
                object_id=str(instance.pk),
                object=object_snapshot,
                now=now,
                timezone=rule.timezone,
            )
            result = evaluate_conditions(rule, ctx, tree, budget=budget)
            if result.budget_error and deadline is not None and time.monotonic() >= deadline:
                # Cut by the firing's deadline, not judged: this record was not examined.
                found.cut = _out_of_time(found.examined)
                return found
            if result.cpu_budget_spent:
                # Not judged either: the organization's condition CPU of the minute is spent.
                reason = cpu_budget.refusal(cpu_budget.current_window())
                found.cut = (
                    f"Stopped after {found.examined} records: {reason}. "
                    "The records after them were not examined."
                )
                return found
            if result.met:
                found.matched.append((instance.pk, object_snapshot))
            found.examined += 1
        last_pk = batch[-1].pk
    rest = records if last_pk is None else records.filter(pk__gt=last_pk)
    if rest.exists():
        found.cut = (
            f"Stopped after {limit} records (AUTOMATION_SCHEDULE_MAX_RECORDS); "
            "the records after them were not examined."
        )
    return found


def _out_of_time(examined: int) -> str:
    return (
        f"Stopped after {examined} records: a firing by hand examines records inside its request "
        f"for at most {settings.AUTOMATION_DRY_RUN_BUDGET_SECONDS:g} s "
        "(AUTOMATION_DRY_RUN_BUDGET_SECONDS); the records after them were not examined."
    )


# --- Firing by hand ------------------------------------------------------------------------------


def fires_by_hand(rule: AutomationRule) -> None:
    """Only a SCHEDULE rule has slots to fire; others are run with runRule (ValidationError)."""
    if rule.trigger_type != TriggerType.SCHEDULE:
        raise ValidationError(
            {
                "id": [
                    f"This is a {rule.trigger_type} rule: runSchedule fires SCHEDULE rules. "
                    "Run it with runRule."
                ]
            }
        )


def fire_now(rule: AutomationRule, *, user=None, budget: float | None = None):
    """Fire a SCHEDULE rule now, by hand, as one of its slots would (the tick's `_fire`).

    Its runs have the MANUAL trigger, so a paused rule runs too (like runRule), and no
    `scheduled_for`: the unique (rule, scheduled_for) constraint is the tick's, and a firing by
    hand neither takes a slot nor moves next_run_at / last_run_at. With a model, the records are
    found before the write's transaction opens (see _fire_due_rule), within `budget` seconds
    when given. Returns the run (without a model) or the finished fan-out log.
    """
    fires_by_hand(rule)
    user_id = user.pk if user is not None and user.is_authenticated else None
    matches = None
    if rule.content_type_id is not None:
        deadline = None if budget is None else time.monotonic() + budget
        matches = _matching_records(rule, timezone.now(), deadline=deadline)
    with transaction.atomic():
        return _fire(rule, None, matches, trigger=TriggerType.MANUAL, user_id=user_id)
