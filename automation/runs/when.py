"""An action's `when`: its own condition tree, evaluated at its turn in the run.

If/else without a new language: two actions with opposite `when`s. The tree is a rule's
conditions' (same operators, same checks at save) and is evaluated by the same evaluator, against
the run's record snapshot, changes and payload as the rule's conditions were, with relation paths
read now (after the earlier actions' writes), and against the results of the earlier actions
(`results.0.id`, conditions/results.py). Its verdict:

- met: the action runs; its log entry keeps the trace (`when_met`, `when_trace`);
- not met: the action is SKIPPED, its error saying which condition did not pass, and the run goes
  on: a run whose actions were skipped by their `when` still SUCCEEDS;
- not evaluated (a condition failed closed: a path that no longer resolves, a budget spent): the
  action FAILS with the reason, as any failed action (continueOnFailure applies). A broken
  condition must not pass for "not met", which would silently skip the branch.
"""

import json
from dataclasses import dataclass

from automation.conditions.tree import ConditionResult, group_from_data
from automation.core.choices import ActionStatus

# A trace value quoted in a reason is cut to this many characters.
REASON_MAX_VALUE = 100


@dataclass(frozen=True)
class WhenVerdict:
    """What an action's `when` decided: run it (status None), or end it with `status`/`error`;
    `fields` go into its log entry either way."""

    status: str | None
    error: str | None
    fields: dict


def evaluate_when(rule, ctx, action, index: int, budget: float | None = None):
    """The verdict of action `index`'s `when`; None when it has none (it always runs)."""
    if action.when is None:
        return None
    from automation.conditions.evaluate import evaluate_conditions  # the evaluator, when used

    ctx.action_order = index  # results.N is checked against it
    tree = group_from_data(action.when, f"actions.{index}.when")
    result = evaluate_conditions(rule, ctx, tree, budget=budget)
    fields = {"when_met": result.met, "when_trace": result.trace}
    if result.met:
        return WhenVerdict(None, None, fields)
    problem = failure(result)
    if problem:
        return WhenVerdict(ActionStatus.FAILED, f"When could not be evaluated: {problem}", fields)
    return WhenVerdict(ActionStatus.SKIPPED, f"When not met{not_passed(result)}", fields)


def failure(result: ConditionResult) -> str | None:
    """Why the tree could not be evaluated (the first failed condition, and how many more)."""
    if result.error:
        return result.error
    if result.budget_error:
        return result.budget_error
    failed = [(number, entry) for number, entry in enumerate(result.trace, 1) if entry["error"]]
    if not failed:
        return None
    number, entry = failed[0]
    reason = f"condition {number} of {len(result.trace)} ({entry['path']}): {entry['error']}"
    if len(failed) > 1:
        reason += f" (and {len(failed) - 1} more with an error)"
    return reason


def not_passed(result: ConditionResult) -> str:
    """': <the first condition that did not pass> (and N more).', or '.' when every condition
    passed and a negated group made the tree false."""
    failed = [entry for entry in result.trace if not entry["passed"]]
    if not failed:
        return "."
    entry = failed[0]
    expected = "" if entry["expected"] is None else f" {_quoted(entry['expected'])}"
    reason = (
        f": {entry['field']} {entry['operator']}{expected} did not pass "
        f"(actual: {_quoted(entry['actual'])})"
    )
    if len(failed) > 1:
        reason += f", and {len(failed) - 1} more condition{'s' if len(failed) > 2 else ''} did not"
    return f"{reason}."


def _quoted(value) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= REASON_MAX_VALUE else f"{text[:REASON_MAX_VALUE]}..."
