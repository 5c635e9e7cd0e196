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
- The trace is bounded: texts longer than TRACE_MAX_TEXT characters and lists longer than
  TRACE_MAX_VALUES are cut (saying how long they were), so a trace stays small whatever the
  rule's values or the record hold.

ONE CHECKER, TWO USES: `leaf_test` checks a leaf's rule side (the operator applies to the field,
a value is there when needed, it coerces to the field's type, is a choice, a list, a valid
pattern) before any record is seen. Evaluation calls it for every leaf; `leaf_errors` calls it
when a rule is saved (RuleCondition.clean), so a rule is refused with the very message its runs
would otherwise fail with.
"""

import datetime
import decimal
import json
import logging
import math
import time
import zoneinfo
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import models
from django.utils import timezone

from automation.conditions import cpu_budget, relative_dates
from automation.core.choices import (
    CHANGE_OPERATORS,
    ConditionLogic,
    Operator,
    TriggerEvent,
    TriggerType,
)
from automation.core.models import ConditionGroup, RuleCondition
from automation.core.registry import PathError, ResolvedPath, model_label, resolve_path
from automation.core.snapshots import diff, json_value
from automation.core.validators import compile_regex

logger = logging.getLogger("automation.conditions.evaluate")

ROOT_PATH = "conditions"
# A trace entry shows at most this many values of a list (a to-many leaf's related values, an IN
# list; the verdict uses all of them), and texts up to this many characters.
TRACE_MAX_VALUES = 20
TRACE_MAX_TEXT = 200
# An error message in a trace entry (it may quote the values it is about).
TRACE_MAX_ERROR = 1000


class ConditionError(Exception):
    """A leaf that cannot be evaluated; its message goes into the trace."""


class OperatorError(ConditionError):
    """The operator does not apply to the field (at save time, reported at the leaf's operator)."""


class BudgetSpent(ConditionError):
    """The evaluation's time budget ran out before this leaf was (fully) evaluated."""


@dataclass(frozen=True)
class Clock:
    """What relative values ("now", "-P7D") are resolved against: the evaluation's instant and
    the rule's time zone (for calendar days). One per evaluation, so its leaves agree on now."""

    now: datetime.datetime  # aware
    zone_name: str = "UTC"

    @classmethod
    def of(cls, rule, now: datetime.datetime | None = None) -> "Clock":
        return cls(now=now or timezone.now(), zone_name=getattr(rule, "timezone", None) or "UTC")

    @property
    def zone(self) -> datetime.tzinfo:
        try:
            return zoneinfo.ZoneInfo(self.zone_name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            raise ConditionError(
                f'The rule\'s time zone "{self.zone_name}" is not valid, so relative dates '
                "cannot be resolved."
            ) from None

    def today(self) -> datetime.date:
        return self.now.astimezone(self.zone).date()


# --- The tree ----------------------------------------------------------------------------------


@dataclass
class LeafNode:
    path: str  # "conditions.groups.0.conditions.1"
    field: str  # the field path, "category__name"
    operator: str
    value: Any
    negate: bool


@dataclass
class GroupNode:
    path: str  # "conditions", "conditions.groups.0", ...
    logic: str = ConditionLogic.AND
    negate: bool = False
    conditions: list[LeafNode] = field(default_factory=list)
    groups: list["GroupNode"] = field(default_factory=list)

    def leaves(self):
        """Every leaf below this group, depth first: a group's own leaves before its subgroups."""
        yield from self.conditions
        for group in self.groups:
            yield from group.leaves()


@dataclass
class ConditionResult:
    met: bool
    trace: list[dict]  # one entry per leaf evaluated
    error: str | None = None  # set when the tree itself could not be evaluated
    budget_error: str | None = None  # set when a budget ran out before every leaf
    # True when that budget was the organization's condition CPU per minute (cpu_budget.py)
    cpu_budget_spent: bool = False


def load_condition_tree(rule) -> GroupNode:
    """The rule's condition tree, built in memory from two queries (groups, then leaves).

    A rule without a root group gets an empty root, which is met.
    """
    groups = list(ConditionGroup.objects.filter(rule=rule).order_by("order", "id"))
    leaves = list(RuleCondition.objects.filter(group__rule=rule).order_by("order", "id"))

    children: dict[int | None, list[ConditionGroup]] = {}
    for group in groups:
        children.setdefault(group.parent_id, []).append(group)
    leaves_of: dict[int, list[RuleCondition]] = {}
    for leaf in leaves:
        leaves_of.setdefault(leaf.group_id, []).append(leaf)

    def build(group: ConditionGroup, path: str) -> GroupNode:
        node = GroupNode(path=path, logic=group.logic, negate=group.negate)
        for index, leaf in enumerate(leaves_of.get(group.id, ())):
            node.conditions.append(
                LeafNode(
                    path=f"{path}.conditions.{index}",
                    field=leaf.field_name,
                    operator=leaf.operator,
                    value=leaf.value,
                    negate=leaf.negate,
                )
            )
        for index, child in enumerate(children.get(group.id, ())):
            node.groups.append(build(child, f"{path}.groups.{index}"))
        return node

    roots = children.get(None, [])
    # Groups are only reached from the root, so a corrupt parent cycle cannot loop forever.
    return build(roots[0], ROOT_PATH) if roots else GroupNode(path=ROOT_PATH)


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
            tree = load_condition_tree(rule)
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


def _trace_entry(path, field_path, operator, expected, actual, passed, error, resolved=None):
    entry = {
        "path": path,
        "field": field_path,
        "operator": operator,
        "expected": _shown(expected),
        "actual": _shown(actual),
        "passed": passed,
        "error": error if error is None else _cut(error, TRACE_MAX_ERROR),
    }
    if resolved is not None:  # only for relative values: other entries keep their shape
        entry["resolved_expected"] = _shown(resolved)
    return entry


def _shown(value, nested: bool = False):
    """`value` (JSON) as a trace entry shows it: texts and lists cut, saying how long they were.

    A list or object inside a list or object is shown as its JSON text, cut the same way.
    """
    if isinstance(value, str):
        return _cut(value, TRACE_MAX_TEXT)
    if nested and isinstance(value, list | dict):
        try:
            text = json.dumps(value)
        except (TypeError, ValueError, RecursionError):
            text = repr(type(value))
        return value if len(text) <= TRACE_MAX_TEXT else _cut(text, TRACE_MAX_TEXT)
    if isinstance(value, list):
        shown = [_shown(item, nested=True) for item in value[:TRACE_MAX_VALUES]]
        if len(value) > TRACE_MAX_VALUES:
            shown.append(f"... {len(value) - TRACE_MAX_VALUES} more ({len(value)} in all)")
        return shown
    if isinstance(value, dict):
        items = list(value.items())
        shown = {
            _cut(str(key), TRACE_MAX_TEXT): _shown(item, nested=True)
            for key, item in items[:TRACE_MAX_VALUES]
        }
        if len(items) > TRACE_MAX_VALUES:
            shown["..."] = f"{len(items) - TRACE_MAX_VALUES} more ({len(items)} in all)"
        return shown
    return value


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


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
        actual = resolved = None
        try:
            self.check_budget()
            passed, actual, resolved = self._evaluate_leaf(leaf)
            passed = passed != leaf.negate
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
        self.trace.append(
            _trace_entry(
                leaf.path, leaf.field, leaf.operator, leaf.value, actual, passed, error, resolved
            )
        )
        return passed

    def _evaluate_leaf(self, leaf: LeafNode) -> tuple[bool, Any, Any]:
        """(comparison verdict before the leaf's negate, actual value for the trace, the
        expected value resolved when it is relative, else None)."""
        if self.scope_error:
            raise ConditionError(self.scope_error)
        if leaf.operator not in Operator.values:
            raise ConditionError(f'Unknown operator "{leaf.operator}".')
        if self.model is None:
            raise ConditionError("This rule has no model, so it has no fields to test.")
        try:
            path = resolve_path(model_label(self.model), leaf.field)
        except (PathError, LookupError) as exc:
            raise ConditionError(f"The field path no longer resolves: {exc}") from None

        operator = Operator(leaf.operator)
        compare = leaf_test(operator, path, leaf.value, self.clock)
        resolved = resolved_relative(path.field, leaf.value, self.clock)
        if operator in CHANGE_OPERATORS:
            change = self._changes().get(path.field.name)
            return compare(change), change, resolved
        if path.is_local:
            actual = self._local_value(path)
            return compare(actual), actual, resolved
        values = self._related_values(path)
        if path.through_many:
            # Every row is compared (no early exit), so a bad row is an error, not hidden.
            verdicts = []
            for value in values:
                self.check_budget()
                verdicts.append(compare(value))
            return any(verdicts), [json_value(value) for value in values], resolved
        actual = values[0] if values else None
        return compare(actual), json_value(actual), resolved

    # --- Where values come from -----------------------------------------------------------

    def _changes(self) -> dict:
        """{"field": {"old", "new"}}; on CREATED every set field changed from null."""
        if self.ctx.event == TriggerEvent.CREATED:
            return diff(None, self.ctx.object)
        return self.ctx.changes or {}

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
        scope = {"pk": start_id, "organization_id": self.ctx.organization_id}
        current = start_model
        for index, hop in enumerate(hops):
            _require_organization_scoped(current)
            current = current._meta.get_field(hop).related_model
            scope["__".join(hops[: index + 1]) + "__organization_id"] = self.ctx.organization_id
        _require_organization_scoped(current)
        value_path = "__".join([*hops, resolved.field.name])
        queryset = (
            start_model._default_manager.filter(**scope)
            .order_by()
            .values_list(value_path, flat=True)
            .distinct()
        )
        return list(queryset)


def _require_organization_scoped(model) -> None:
    try:
        model._meta.get_field("organization")
    except FieldDoesNotExist:
        raise ConditionError(
            f"{model_label(model)} is not organization-scoped, so conditions may not read it."
        ) from None


# --- Operators ---------------------------------------------------------------------------------

_ORDERING = {
    Operator.GREATER_THAN: lambda a, b: a > b,
    Operator.GREATER_THAN_OR_EQUAL: lambda a, b: a >= b,
    Operator.LESS_THAN: lambda a, b: a < b,
    Operator.LESS_THAN_OR_EQUAL: lambda a, b: a <= b,
}
_TEXT = {
    Operator.CONTAINS: lambda a, b: b in a,
    Operator.NOT_CONTAINS: lambda a, b: b not in a,
    Operator.ICONTAINS: lambda a, b: b.casefold() in a.casefold(),
    Operator.STARTS_WITH: lambda a, b: a.startswith(b),
    Operator.ENDS_WITH: lambda a, b: a.endswith(b),
}


VALUELESS_OPERATORS = {Operator.IS_NULL, Operator.IS_NOT_NULL, Operator.CHANGED}


def leaf_test(operator: Operator, path: ResolvedPath, expected, clock: Clock):
    """The test of one leaf (a function of the actual value, or of the field's change for the
    CHANGED operators), its rule side checked first: ConditionError (OperatorError when the
    operator does not apply to the field) before any record is seen.

    The one checker of a leaf's rule side: evaluation calls it for every leaf, and `leaf_errors`
    when the rule is saved. Relation paths are checked against their final field.
    """
    if operator in CHANGE_OPERATORS:
        if not path.is_local:
            raise OperatorError(f"{operator} applies to the record's own fields only.")
        return _change_comparison(operator, path.field, expected, clock)
    return _comparison(operator, path.field, expected, clock)


def leaf_errors(rule, field_path, operator, value) -> dict[str, list[str]]:
    """Save-time check of one condition of `rule` (RuleCondition.clean):
    {"field_name" | "operator" | "value": [messages]}, {} when it is valid.

    The rule's side is checked by `leaf_test`, as every run of the rule would check it, against
    the current time (relative dates are resolved, so one that leaves the calendar is refused).
    """
    errors: dict[str, list[str]] = {}
    if operator not in Operator.values:
        return errors  # the field's choices report it
    operator = Operator(operator)
    if operator in CHANGE_OPERATORS:
        refusal = _change_refusal(operator, rule)
        if refusal:
            errors["operator"] = [refusal]
    if not rule.content_type_id:
        errors["field_name"] = ["This rule has no model, so it has no fields to test."]
        return errors
    try:
        path = resolve_path(rule.model, field_path)
    except (PathError, LookupError) as exc:
        errors["field_name"] = [str(exc)]
        return errors
    if "operator" in errors:
        return errors
    if operator in VALUELESS_OPERATORS and value is not None:
        # A run ignores it; an author who gave one meant something else (EQUALS, CHANGED_TO).
        errors["value"] = [f"{operator} takes no value: leave it out (or null)."]
        return errors
    try:
        leaf_test(operator, path, value, Clock.of(rule))
    except OperatorError as exc:
        errors["operator"] = [str(exc)]
    except ConditionError as exc:
        errors["value"] = [str(exc)]
    return errors


def _change_refusal(operator: Operator, rule) -> str | None:
    """Why a CHANGED operator cannot work on `rule`'s trigger, or None when it can."""
    if rule.trigger_type != TriggerType.EVENT:
        return f"{operator} applies to EVENT rules only."
    if rule.trigger_event == TriggerEvent.DELETED:
        return f"{operator} does not apply to a DELETED rule: a deleted record has no changes."
    if rule.trigger_event == TriggerEvent.CREATED:
        if operator == Operator.CHANGED:
            return (
                "CHANGED is true of every field set on a CREATED rule (on CREATED every set "
                "field counts as changed from null): use IS_NOT_NULL."
            )
        if operator == Operator.CHANGED_FROM:
            return (
                "CHANGED_FROM does not apply to a CREATED rule: a new record's fields always "
                "change from null. Use IS_NOT_NULL, or CHANGED_TO or EQUALS for the new value."
            )
    return None


def resolved_relative(model_field, expected, clock: Clock):
    """What a relative expected value ("-P7D", or an IN list holding some) stood for, as JSON,
    for the trace; None when nothing in it is relative. Call it after `leaf_test` has accepted
    the value."""
    if not isinstance(_base_field(model_field), models.DateField):
        return None
    if relative_dates.is_relative(expected):
        return json_value(_resolve_relative(model_field, expected, clock))
    if isinstance(expected, list) and any(map(relative_dates.is_relative, expected)):
        return [
            json_value(_resolve_relative(model_field, item, clock))
            if relative_dates.is_relative(item)
            else item
            for item in expected
        ]
    return None


def _comparison(operator: Operator, model_field, expected, clock: Clock):
    """A function actual -> bool for a non-CHANGED operator, the expected value checked first.

    The expected value is coerced once, before any actual value is seen, so a broken rule is an
    error even when the record's value is null.
    """
    if operator == Operator.IS_NULL:
        return lambda actual: actual is None
    if operator == Operator.IS_NOT_NULL:
        return lambda actual: actual is not None

    def actual_of(actual):
        return coerce_value(model_field, actual)

    if operator in (Operator.EQUALS, Operator.NOT_EQUALS):
        wanted = None if expected is None else _coerce_expected(model_field, expected, clock)

        def equal(actual):
            if actual is None or wanted is None:
                return actual is None and wanted is None
            return actual_of(actual) == wanted

        if operator == Operator.EQUALS:
            return equal
        return lambda actual: not equal(actual)

    if operator in (Operator.IN, Operator.NOT_IN):
        if not isinstance(expected, list):
            raise ConditionError(f"{operator} needs a list of values.")
        wanted = [
            _coerce_expected(model_field, item, clock) for item in expected if item is not None
        ]
        if operator == Operator.IN:
            return lambda actual: actual is not None and actual_of(actual) in wanted
        return lambda actual: actual is not None and actual_of(actual) not in wanted

    if expected is None:
        raise ConditionError(f"{operator} needs a value.")

    if operator in _ORDERING:
        if _base_field(model_field).get_internal_type() == "BooleanField":
            raise OperatorError(f"{operator} does not apply to a true/false field.")
        wanted = _coerce_expected(model_field, expected, clock)
        test = _ORDERING[operator]
        return lambda actual: actual is not None and test(actual_of(actual), wanted)

    _require_text_field(operator, model_field)
    if not isinstance(expected, str):
        raise ConditionError(f"{operator} needs a text value, not {_json_type(expected)}.")

    if operator == Operator.REGEX:
        return _regex_test(expected, actual_of)
    test = _TEXT[operator]
    return lambda actual: actual is not None and test(actual_of(actual), expected)


def _regex_test(pattern: str, actual_of):
    """A search with RE2 (linear time, see validators.compile_regex), refused when the match
    could cost more than AUTOMATION_REGEX_MAX_STEPS: RE2's slowest path visits every instruction
    of the program once per byte of text, so (program size x text length) bounds its work.
    """
    try:
        compiled = compile_regex(pattern)
    except ValidationError as exc:
        raise ConditionError(" ".join(exc.messages)) from None
    program_size = _program_size(compiled)
    max_steps = settings.AUTOMATION_REGEX_MAX_STEPS

    def test(actual):
        if actual is None:
            return False
        text = actual_of(actual)
        if program_size * len(text.encode()) > max_steps:
            raise ConditionError(
                f"The text ({len(text)} characters) is too long for this regular expression: "
                f"matching it could take more than {max_steps} steps "
                "(AUTOMATION_REGEX_MAX_STEPS). Use a simpler pattern."
            )
        return compiled.search(text) is not None

    return test


def _program_size(compiled) -> int:
    """The larger of RE2's forward and reverse programs (a search may run either)."""
    program = compiled._regexp  # google-re2 keeps the RE2 object here (pinned version)
    return max(program.ProgramSize(), program.ReverseProgramSize())


def _change_comparison(operator: Operator, model_field, expected, clock: Clock):
    """A function change -> bool for CHANGED / CHANGED_FROM / CHANGED_TO, where a change is
    {"old", "new"} (None: unchanged); the expected value checked first, as in _comparison."""
    if operator == Operator.CHANGED:
        return lambda change: change is not None
    wanted = None if expected is None else _coerce_expected(model_field, expected, clock)
    side_name = "old" if operator == Operator.CHANGED_FROM else "new"

    def test(change):
        if change is None:
            return False
        side = change.get(side_name)
        side = None if side is None else coerce_value(model_field, side)
        return side == wanted

    return test


def _require_text_field(operator, model_field) -> None:
    if not isinstance(_base_field(model_field), models.CharField | models.TextField):
        raise OperatorError(
            f"{operator} applies to text fields; {model_field.name} is "
            f"{model_field.get_internal_type()}."
        )


def _json_type(value) -> str:
    return {
        bool: "true/false",
        int: "a number",
        float: "a number",
        str: "text",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


# --- Coercion ----------------------------------------------------------------------------------


def _base_field(model_field):
    """The field whose type values have: a foreign key compares as its target's id."""
    while model_field.is_relation and model_field.concrete:
        model_field = model_field.target_field
    return model_field


def _coerce_expected(model_field, value, clock: Clock):
    """An expected (rule-side) value: coerced, and for a choice field one of its choices; on a
    date or date-time field a relative value ("now", "-P7D") is resolved against `clock`."""
    base = _base_field(model_field)
    if isinstance(base, models.DateField):
        coerced = _coerce_expected_date(model_field, value, clock)
    else:
        coerced = coerce_value(model_field, value)
    if base.choices:
        valid = [key for key, _label in base.flatchoices]
        if coerced not in valid:
            raise ConditionError(
                f'"{value}" is not a choice of {model_field.name} ({", ".join(map(str, valid))}).'
            )
    return coerced


def _coerce_expected_date(model_field, value, clock: Clock):
    """A date or date-time expected value: fixed (ISO 8601) or relative; a message that names
    both forms when it is neither."""
    if relative_dates.is_relative(value):
        return _resolve_relative(model_field, value, clock)
    try:
        return coerce_value(model_field, value)
    except ConditionError as exc:
        if isinstance(_base_field(model_field), models.DateTimeField):
            kind, example = "date-time", "2026-01-31T09:00:00Z"
        else:
            kind, example = "date", "2026-01-31"
        raise ConditionError(
            f'{exc} A {kind} value is ISO 8601 ("{example}") or relative to the evaluation: '
            f"{relative_dates.ACCEPTED_FORMS}."
        ) from None


def _resolve_relative(model_field, value: str, clock: Clock):
    """A relative value as the date or aware instant it stands for at `clock`."""
    try:
        if isinstance(_base_field(model_field), models.DateTimeField):
            return relative_dates.resolve_datetime(value, clock.now, clock.zone)
        return relative_dates.resolve_date(value, clock.today())
    except relative_dates.RelativeDateError as exc:
        raise ConditionError(f"{model_field.name}: {exc}") from None


def coerce_value(model_field, value):
    """`value` (JSON from a snapshot or a rule, or a Python value from the database) as the
    field's type; ConditionError when it is not one."""
    base = _base_field(model_field)
    kind = base.get_internal_type()
    try:
        if isinstance(base, models.BooleanField):
            return _to_bool(value)
        if isinstance(base, models.IntegerField):  # AutoField and the other integers too
            return _to_int(value)
        if isinstance(base, models.DecimalField):
            return _to_decimal(value)
        if isinstance(base, models.FloatField):
            return _to_float(value)
        if isinstance(base, models.DateTimeField):  # before DateField, its parent
            return _to_datetime(value)
        if isinstance(base, models.DateField):
            return _to_date(value)
        if isinstance(base, models.CharField | models.TextField):
            if not isinstance(value, str):
                raise ValueError
            return value
        return base.to_python(value)
    except (ValueError, TypeError, ArithmeticError, ValidationError):
        raise ConditionError(
            f"{value!r} cannot be compared with {model_field.name} ({kind})."
        ) from None


def _to_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError


def _to_int(value) -> int:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return int(value.strip())
    raise ValueError


def _to_decimal(value) -> decimal.Decimal:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, decimal.Decimal):
        result = value
    elif isinstance(value, int | float | str):
        # str() of a float keeps its short form: 9.99 stays 9.99, not 9.9900000000000002131...
        result = decimal.Decimal(str(value).strip())
    else:
        raise ValueError
    if not result.is_finite():
        raise ValueError
    return result


def _to_float(value) -> float:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int | float | decimal.Decimal | str):
        result = float(value)
        if math.isfinite(result):
            return result
    raise ValueError


def _to_datetime(value) -> datetime.datetime:
    if isinstance(value, datetime.datetime):
        result = value
    elif isinstance(value, str):
        result = datetime.datetime.fromisoformat(value.strip())
    else:
        raise ValueError
    if result.tzinfo is None:  # naive means UTC, as the contract's values do
        result = result.replace(tzinfo=datetime.UTC)
    return result


def _to_date(value) -> datetime.date:
    if isinstance(value, datetime.datetime):
        raise ValueError
    if isinstance(value, datetime.date):
        return value
    if isinstance(value, str):
        return datetime.date.fromisoformat(value.strip())
    raise ValueError
