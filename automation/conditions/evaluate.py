"""The condition evaluator: does a run's record meet its rule's condition tree?

A rule's conditions are a tree: the root ConditionGroup (parent null) holds leaves (RuleCondition)
and nested groups, each group combining its children with AND/OR and optionally negated, each
leaf optionally negated. `evaluate_conditions` walks the whole tree (no short-circuit, so the trace
shows every leaf to someone debugging a rule) and returns the verdict with one trace entry per
leaf.

Where values come from:
- the record's own fields: the run's snapshot (`ctx.object`, JSON-typed, see snapshots.py), so a
  run judges the record as it was at the event, not as it is when the worker gets to it;
- relation paths (`category__name`, `products__name`): the database, one query per distinct path,
  every model on the way filtered by the run's organization so no path reads another
  organization's rows, even through a foreign key that points there (such a hop reads as empty).

Semantics worth knowing:
- A path through a to-many relation is true when ANY related row satisfies the leaf's comparison;
  the leaf's negate applies to that aggregated verdict ("NOT products__name EQUALS x" means "no
  product is named x"). No related rows: the comparison is false (IS_NULL too).
- A to-one path with no related row (null foreign key) reads as null.
- Both sides are coerced to the final field's type before comparing; a value that cannot be
  coerced (or an invalid choice) is an error of that leaf, never a silent false.
- Date and date-time fields also compare with relative values ("now", "-P7D"; see
  relative_dates.py), resolved against the evaluation's clock: one instant per evaluation (the
  run context's `now`), dates counted in the rule's time zone. The trace keeps `expected` as the
  rule has it and adds `resolved_expected` with what it stood for.
- `None` compares true only with IS_NULL, EQUALS null and NOT_EQUALS (None differs from any value);
  every other operator is false on a null actual. CHANGED_FROM / CHANGED_TO compare old / new
  values by equality, so "changed from null" works.
- The record as it was before the write (`previous: true`, the crossings CROSSED_BELOW /
  CROSSED_ABOVE) and comparisons with another field (`valueField`) are read here and compared
  by sides.py, whose docstring says what they mean.
- An empty group is met whatever its logic (then its own negate applies); a rule without a root
  group is met.
- FAIL CLOSED: an error in any leaf (path no longer resolves, uncoercible value, a regex match too
  costly to run, database error) makes the whole result not met whatever negation sits above it;
  the error is in that leaf's trace entry (passed false). Nothing raises out of
  `evaluate_conditions`.
- BUDGET: an evaluation has a time budget (AUTOMATION_CONDITIONS_BUDGET_SECONDS). Once it is
  spent, every leaf not evaluated yet fails closed with an error saying so, and the result says
  how many were left (`budget_error`). A single database read or regex match is not interrupted;
  each is bounded on its own (one query per relation path, AUTOMATION_REGEX_MAX_STEPS).
- CPU PER ORGANIZATION: every evaluation's CPU is charged to the rule's organization, which may
  use AUTOMATION_CONDITIONS_CPU_SECONDS_PER_MINUTE (cpu_budget.py); once it is spent, the leaves
  left fail closed the same way (`budget_error` names that setting, `cpu_budget_spent` is set)
  until the minute ends. A tree without leaves evaluates nothing and is still met.
- The trace is bounded (trace.py), so it stays small whatever the rule's values or the record
  hold.

ONE CHECKER, TWO USES: `leaf_test` checks a leaf's rule side (the operator applies to the field,
a value is there when needed, it coerces to the field's type, is a choice, a list, a valid
pattern) before any record is seen (`sides.field_test` for a leaf with a valueField). Evaluation
calls it for every leaf; `checks.leaf_errors` calls it when a rule is saved, so a rule is refused
with the very message its runs would otherwise fail with.
"""

import logging
import time
from typing import Any

from django.conf import settings
from django.contrib.contenttypes.models import ContentType

from automation.conditions import cpu_budget, operators, payload, results, sides, trace
from automation.conditions import tree as condition_tree
from automation.conditions.coercion import coerce_value
from automation.conditions.operators import resolved_relative
from automation.conditions.tree import (
    BudgetSpent,
    Clock,
    ConditionError,
    ConditionResult,
    GroupNode,
    LeafNode,
    Outcome,
)
from automation.core.choices import (
    CHANGE_OPERATORS,
    CROSSING_OPERATORS,
    OPERATORS,
    ConditionLogic,
    Operator,
    TriggerEvent,
    TriggerType,
)
from automation.core.registry import (
    PathError,
    ResolvedPath,
    model_label,
    organization_lookup_for,
    resolve_path,
)
from automation.core.snapshots import diff, json_value

logger = logging.getLogger("automation.conditions.evaluate")


# --- Evaluation --------------------------------------------------------------------------------


def evaluate_conditions(
    rule, ctx, tree: GroupNode | None = None, *, budget: float | None = None
) -> ConditionResult:
    """Evaluate `rule`'s conditions against the run context `ctx` (see the module docstring).

    Pass `tree` (from load_condition_tree) to evaluate many records without reloading it.
    `budget`: seconds this evaluation may take (default AUTOMATION_CONDITIONS_BUDGET_SECONDS).
    Never raises: an unexpected failure yields not met with the error in the trace.
    """
    if budget is None:
        budget = settings.AUTOMATION_CONDITIONS_BUDGET_SECONDS
    cpu_started = cpu_budget.cpu_clock()
    try:
        if tree is None:
            tree = condition_tree.load_condition_tree(rule)
        evaluator = _Evaluator(rule, ctx, budget, cpu_started)
        verdict = evaluator.group_verdict(tree)
        failed = any(entry["error"] for entry in evaluator.trace)
        return ConditionResult(
            met=verdict and not failed,
            trace=evaluator.trace,
            budget_error=evaluator.budget_error(),
            cpu_budget_spent=evaluator.cpu_refused,
        )
    except Exception as exc:
        logger.exception("Conditions of rule %s could not be evaluated", getattr(rule, "pk", None))
        return ConditionResult(met=False, trace=[], error=_internal_error(exc))
    finally:
        _charge_cpu(rule, cpu_started)


def _charge_cpu(rule, cpu_started: float) -> None:
    """Charge the evaluation's CPU to the rule's organization (see cpu_budget.py); a failure to
    count never changes the verdict."""
    try:
        if cpu_budget.limit() > 0 and rule.organization_id is not None:
            cpu_budget.charge(rule.organization_id, cpu_budget.cpu_clock() - cpu_started)
    except Exception:
        logger.exception("condition CPU of rule %s not charged", getattr(rule, "pk", None))


def _internal_error(exc: Exception) -> str:
    """The trace is shown to the organization's users: the details stay in the server log."""
    return f"Internal error ({type(exc).__name__}); the server log has the details."


class _Evaluator:
    """One evaluation: the rule, the run's context, the trace and the relation values read."""

    def __init__(self, rule, ctx, budget: float, cpu_started: float):
        self.rule = rule
        self.ctx = ctx
        self.budget = budget
        self.deadline = time.monotonic() + budget
        self.unevaluated = 0  # leaves reached after the budget was spent
        self.spent: str | None = None  # why the leaves left are not evaluated
        self.cpu_started = cpu_started
        self.cpu_allowance: float | None = None  # CPU seconds left to the organization
        self.cpu_refused = False
        self.trace: list[dict] = []
        self._related: dict[str, list | ConditionError] = {}  # relation path -> values or error
        self.clock = Clock.of(rule, ctx.now)
        self.model = self._rule_model()
        self.scope_error = None
        if ctx.organization_id != rule.organization_id:
            # A caller bug, but one that could read another organization's rows: refuse.
            self.scope_error = "The run's organization is not the rule's organization."

    def _rule_model(self):
        """The rule's model class (None without one), from the ContentType cache: no query
        after the first use, unlike `rule.model`."""
        if not self.rule.content_type_id:
            return None
        return ContentType.objects.get_for_id(self.rule.content_type_id).model_class()

    def group_verdict(self, group: GroupNode) -> bool:
        verdicts = [self.leaf_verdict(leaf) for leaf in group.conditions]
        verdicts += [self.group_verdict(child) for child in group.groups]
        if not verdicts:
            met = True
        elif group.logic == ConditionLogic.OR:
            met = any(verdicts)
        else:
            met = all(verdicts)
        return met != group.negate

    def check_budget(self) -> None:
        """Raise BudgetSpent once the evaluation has used its time, or its organization its
        condition CPU of the minute (checked before each leaf and each value a to-many leaf
        compares). Once one is spent, it stays the reason for every leaf left."""
        if self.spent is None:
            if time.monotonic() >= self.deadline:
                self.spent = (
                    f"Not evaluated: the time budget of {self.budget:g} s for evaluating the "
                    "conditions (AUTOMATION_CONDITIONS_BUDGET_SECONDS) was spent."
                )
            elif self._cpu_spent():
                self.cpu_refused = True
                self.spent = f"Not evaluated: {cpu_budget.refusal(cpu_budget.current_window())}."
        if self.spent is not None:
            raise BudgetSpent(self.spent)

    def _cpu_spent(self) -> bool:
        """Has the organization used its condition CPU of the minute, this evaluation's so far
        included? What it had spent before is read once, at the first leaf."""
        limit = cpu_budget.limit()
        if limit <= 0:
            return False
        if self.cpu_allowance is None:
            self.cpu_allowance = limit - cpu_budget.spent(self.rule.organization_id)
        return cpu_budget.cpu_clock() - self.cpu_started >= self.cpu_allowance

    def budget_error(self) -> str | None:
        if not self.unevaluated:
            return None
        left = f"{self.unevaluated} of {len(self.trace)} conditions left, which count as failed"
        if self.cpu_refused:
            reason = cpu_budget.refusal(cpu_budget.current_window())
            return f"Conditions not evaluated: {reason}; {left}."
        return (
            f"Conditions not evaluated in time: the budget of {self.budget:g} s "
            f"(AUTOMATION_CONDITIONS_BUDGET_SECONDS) was spent with {left}."
        )

    def leaf_verdict(self, leaf: LeafNode) -> bool:
        outcome = None
        try:
            self.check_budget()
            outcome = self._evaluate_leaf(leaf)
            passed = outcome.passed != leaf.negate
            error = None
        except BudgetSpent as exc:
            passed, error = False, str(exc)
            self.unevaluated += 1
        except ConditionError as exc:
            passed, error = False, str(exc)
            logger.warning("Condition %s of rule %s failed: %s", leaf.path, self.rule.pk, error)
        except Exception as exc:  # a database error or a bug: fail closed, keep evaluating
            passed, error = False, _internal_error(exc)
            logger.exception("Condition %s of rule %s crashed", leaf.path, self.rule.pk)
        self.trace.append(trace.leaf_entry(leaf, outcome, passed, error))
        return passed

    def _evaluate_leaf(self, leaf: LeafNode) -> Outcome:
        """The leaf's comparison (its verdict before the leaf's negate) and what it read."""
        if self.scope_error:
            raise ConditionError(self.scope_error)
        if leaf.operator not in OPERATORS:
            raise ConditionError(f'Unknown operator "{leaf.operator}".')
        if results.is_results_path(leaf.field):
            return self._results_leaf(leaf)
        if self.rule.trigger_type == TriggerType.WEBHOOK or payload.is_payload_path(leaf.field):
            return self._payload_leaf(leaf)
        path = self._resolve(leaf.field)
        operator = Operator(leaf.operator)
        if leaf.value_field:
            return self._field_against_field(leaf, operator, path)
        compare = operators.leaf_test(operator, path, leaf.value, self.clock)
        resolved = resolved_relative(path.field, leaf.value, self.clock)
        if operator in CHANGE_OPERATORS:
            change = self._changes().get(path.field.name)
            return Outcome(compare(change), change, resolved)
        if operator in CROSSING_OPERATORS:
            old, new = self._previous_value(path), self._local_value(path)
            return Outcome(compare(old, new), new, resolved, {"actual_previous": old})
        if leaf.previous:
            old = self._previous_value(path)
            actual = self._local_value(path)
            return Outcome(compare(old), actual, resolved, {"actual_previous": old})
        passed, actual = self._compare_field(path, compare)
        return Outcome(passed, actual, resolved)

    def _field_against_field(self, leaf: LeafNode, operator, path: ResolvedPath) -> Outcome:
        """A leaf with a valueField (sides.py): the other field's value takes the place of the
        leaf's value, read from the record as it was before the write too where the leaf needs
        it (`previous`, a crossing)."""
        other = self._resolve(leaf.value_field)
        test = sides.field_test(operator, path, other, leaf.previous)
        if operator in CROSSING_OPERATORS or leaf.previous:
            old, new = self._previous_value(path), self._local_value(path)
            other_old, other_new = self._previous_value(other), self._local_value(other)
            if operator in CROSSING_OPERATORS:
                passed = test(old, new, other_old, other_new)
            else:
                passed = test(old, other_old)
            more = {"expected": other_new, "actual_previous": old, "expected_previous": other_old}
            return Outcome(passed, new, more=more)
        other_value = self._value_of(other)
        passed, actual = self._compare_field(path, lambda value: test(value, other_value))
        return Outcome(passed, actual, more={"expected": other_value})

    def _resolve(self, field_path: str) -> ResolvedPath:
        if self.model is None:
            raise ConditionError("This rule has no model, so it has no fields to test.")
        try:
            return resolve_path(model_label(self.model), field_path)
        except (PathError, LookupError) as exc:
            raise ConditionError(f"The field path no longer resolves: {exc}") from None

    def _compare_field(self, path: ResolvedPath, compare) -> tuple[bool, Any]:
        """(verdict, actual value for the trace) of `compare` on the field's value now: the
        record's own, a to-one relation's, or any of a to-many relation's."""
        if path.is_local:
            actual = self._local_value(path)
            return compare(actual), actual
        values = self._related_values(path)
        if path.through_many:
            # Every row is compared (no early exit), so a bad row is an error, not hidden.
            verdicts = []
            for value in values:
                self.check_budget()
                verdicts.append(compare(value))
            return any(verdicts), [json_value(value) for value in values]
        actual = values[0] if values else None
        return compare(actual), json_value(actual)

    def _payload_leaf(self, leaf: LeafNode) -> Outcome:
        """A leaf on the run's payload (conditions/payload.py): checked as at save time."""
        if self.rule.trigger_type != TriggerType.WEBHOOK:
            raise ConditionError("Only the runs of WEBHOOK rules have a payload.")
        payload.check_path(leaf.field)
        compare = payload.payload_test(Operator(leaf.operator), leaf.value)
        if self.ctx.payload is None:
            raise ConditionError("This run has no payload.")
        actual = payload.read(self.ctx.payload, leaf.field)
        return Outcome(compare(actual), actual)

    def _results_leaf(self, leaf: LeafNode) -> Outcome:
        """A leaf of an action's `when` on an earlier action's result (conditions/results.py)."""
        results.check_path(leaf.field, self.ctx.action_order)
        compare = payload.payload_test(Operator(leaf.operator), leaf.value, results.SOURCE)
        actual = results.read(self.ctx.results, leaf.field)
        return Outcome(compare(actual), actual)

    # --- Where values come from -----------------------------------------------------------

    def _changes(self) -> dict:
        """{"field": {"old", "new"}}; on CREATED every set field changed from null."""
        if self.ctx.event == TriggerEvent.CREATED:
            return diff(None, self.ctx.object)
        return self.ctx.changes or {}

    def _previous_value(self, resolved: ResolvedPath):
        """A field of the record's own as it was before the write: its change's old value, or,
        when the write did not change it, its value now (sides.py)."""
        if not resolved.is_local:
            raise ConditionError(
                "Only the record's own fields have a value before the write: the values related "
                "records had are not kept."
            )
        change = self._changes().get(resolved.field.name)
        if change is not None:
            return change.get("old")
        return self._local_value(resolved)

    def _value_of(self, resolved: ResolvedPath):
        """One field's value now, the record's own or a to-one relation's (JSON, for the
        trace, which shows it as `expected`)."""
        if resolved.is_local:
            return self._local_value(resolved)
        values = self._related_values(resolved)
        return json_value(values[0]) if values else None

    def _local_value(self, resolved: ResolvedPath):
        if self.ctx.object is None:
            raise ConditionError("This run has no record to read fields from.")
        if resolved.field.name not in self.ctx.object:
            raise ConditionError(f'"{resolved.field.name}" is not in the record\'s snapshot.')
        return self.ctx.object[resolved.field.name]

    def _related_values(self, resolved: ResolvedPath) -> list:
        """The values of a relation path, read once per evaluation (errors too)."""
        if resolved.path not in self._related:
            try:
                self._related[resolved.path] = self._query_related(resolved)
            except ConditionError as exc:
                self._related[resolved.path] = exc
        values = self._related[resolved.path]
        if isinstance(values, ConditionError):
            raise values
        return values

    def _query_related(self, resolved: ResolvedPath) -> list:
        """One query: the final field's values reached from the record, organization-scoped.

        A forward to-one first hop starts from the snapshot's foreign key id (so a DELETED
        record's relations still resolve); a to-many first hop starts from the record itself,
        which a DELETED event no longer has: no rows.
        """
        if self.ctx.object is None:
            raise ConditionError("This run has no record to read relations from.")
        model = self.model
        first = model._meta.get_field(resolved.hops[0])
        if first.concrete and (first.many_to_one or first.one_to_one):
            start_id = self.ctx.object.get(first.name)
            if start_id is None:
                return []
            start_model = first.related_model
            hops = list(resolved.hops[1:])
        else:
            if self.ctx.event == TriggerEvent.DELETED:
                return []
            start_model = model
            start_id = self.ctx.object_id or self.ctx.object.get(model._meta.pk.name)
            hops = list(resolved.hops)
        try:
            start_id = coerce_value(start_model._meta.pk, start_id)
        except ConditionError:
            raise ConditionError(f'The record id "{start_id}" is not valid.') from None

        # Every model on the way, the starting one included, is filtered by organization, in one
        # filter() call so a to-many hop's organization test applies to the row whose value is read.
        organization_id = self.ctx.organization_id
        scope = {"pk": start_id, organization_lookup_or_fail(start_model): organization_id}
        current = start_model
        for index, hop in enumerate(hops):
            current = current._meta.get_field(hop).related_model
            lookup = organization_lookup_or_fail(current)
            scope["__".join([*hops[: index + 1], lookup])] = organization_id
        value_path = "__".join([*hops, resolved.field.name])
        queryset = (
            start_model._default_manager.filter(**scope)
            .order_by()
            .values_list(value_path, flat=True)
            .distinct()
        )
        return list(queryset)


def organization_lookup_or_fail(model) -> str:
    """How to keep `model`'s rows to one organization; ConditionError when it has no organization."""
    lookup = organization_lookup_for(model)
    if lookup is None:
        raise ConditionError(
            f"{model_label(model)} is not organization-scoped, so conditions may not read it."
        )
    return lookup
