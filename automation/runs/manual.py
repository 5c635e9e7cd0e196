"""Runs started by hand: runRule (real and dry runs) and retryRun."""

import logging

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from automation.core.choices import RunStatus, TriggerType
from automation.core.models import AutomationLog, AutomationRule
from automation.core.payloads import payload_problem
from automation.core.registry import get_automatable
from automation.fanout import budget
from automation.runs.create import OMITTED_KEY, create_run, depth_limit_error
from automation.runs.execute import execute_dry_run

logger = logging.getLogger("automation.runs.manual")


class RunConflict(Exception):
    """The run's state forbids the request now (e.g. retrying a run that is still running)."""


class RunObjectNotFound(Exception):
    """The object to run on is not a record of the rule's organization."""


def run_rule(
    rule: AutomationRule,
    *,
    object_id=None,
    user=None,
    dry_run=False,
    changes=None,
    record=None,
    payload=None,
) -> AutomationLog:
    """Run `rule` now (MANUAL trigger), on `object_id` when the rule has a model.

    A real run is queued and returned PENDING. A dry run is executed here, synchronously: its
    conditions are evaluated and every action's parameters rendered and validated, recording what
    each action would do; it writes nothing but its own log. A dry run stands for the rule's
    event and may be given simulated `changes` and a `record` (automation/conditions/simulation.py); with a
    `record`, `object_id` may be left out. A WEBHOOK rule's run is given the `payload` a request
    would send (an empty object when left out), checked as the endpoint checks a body.
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
    extra_context = _with_payload(rule, payload)
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
            **_simulated(simulation, extra_context),
        )
    if dry_run and log.status == RunStatus.PENDING:
        execute_dry_run(log)
        log.refresh_from_db()
    return log


def _object_needed(dry_run: bool) -> str:
    if dry_run:
        return "This rule has a model: give the record's id, or a simulated record (record)."
    return "This rule has a model: give the record's id."


def _with_payload(rule, payload) -> dict:
    """The run's context beside its record: a WEBHOOK rule's payload; ValidationError at
    `payload` when it is not one a request could send, or the rule takes none."""
    if rule.trigger_type != TriggerType.WEBHOOK:
        if payload is not None:
            raise ValidationError(
                {"payload": ["Only WEBHOOK rules take a payload: their runs are sent one."]}
            )
        return {}
    payload = {} if payload is None else payload
    problem = payload_problem(payload)
    if problem:
        raise ValidationError({"payload": [problem]})
    return {"payload": payload}


def _simulated(simulation, extra_context: dict) -> dict:
    """create_run's arguments for the run's context and, for a dry run, its simulated event; a
    dry run whose simulated event would not fire the rule is written SKIPPED, saying why."""
    if simulation is None:
        return {"extra_context": extra_context or None}
    arguments = {"event": simulation.event, "changes": simulation.changes}
    if simulation.given:
        extra_context = {**extra_context, "simulated": simulation.given}
    arguments["extra_context"] = extra_context or None
    if simulation.refusal:
        arguments.update(status=RunStatus.SKIPPED, error=simulation.refusal)
    return arguments


def _find_object(rule, object_id):
    try:
        entry = get_automatable(rule.model)
        instance = entry.of_organization(rule.organization_id).filter(pk=object_id).first()
    except (LookupError, ValueError, TypeError, ValidationError):
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
    if log.status in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING):
        raise RunConflict(f"Run {log.pk} is still {log.status}; retry it once it has finished.")
    if (log.context or {}).get(OMITTED_KEY):
        raise RunConflict(
            f"Run {log.pk} kept no snapshot (over a byte budget): run the rule on the record "
            "again instead (runRule)."
        )
    chain = (log.context or {}).get("chain")
    kept = {"chain": chain} if chain else {}
    if (log.context or {}).get("payload") is not None:
        kept["payload"] = log.context["payload"]  # a WEBHOOK run's, as it was sent
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
            extra_context=kept or None,
            budget_root=budget.root_of(log),
            **refusal,
        )
    if retry.dry_run:
        execute_dry_run(retry)
        retry.refresh_from_db()
    return retry
