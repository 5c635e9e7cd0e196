"""A rule's condition tree as the evaluator walks it (groups and leaves, loaded from the models
once per rule definition), the evaluation's clock, and the errors a leaf can have."""

import datetime
import zoneinfo
from dataclasses import dataclass, field
from typing import Any

from django.utils import timezone

from automation.core.choices import (
    ConditionLogic,
)
from automation.core.models import ConditionGroup, RuleCondition

ROOT_PATH = "conditions"


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
    previous: bool = False  # test the record as it was before the write
    value_field: str = ""  # compare with this field path of the record instead of `value`


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
class Outcome:
    """What the evaluation of one leaf found: its verdict before the leaf's negate, the record's
    value (`actual`), what a relative expected value stood for, and the trace keys of leaves that
    read more (`actual_previous`, `expected` read from a valueField, `expected_previous`)."""

    passed: bool
    actual: Any = None
    resolved: Any = None
    more: dict = field(default_factory=dict)


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
                    previous=leaf.previous,
                    value_field=leaf.value_field,
                )
            )
        for index, child in enumerate(children.get(group.id, ())):
            node.groups.append(build(child, f"{path}.groups.{index}"))
        return node

    roots = children.get(None, [])
    # Groups are only reached from the root, so a corrupt parent cycle cannot loop forever.
    return build(roots[0], ROOT_PATH) if roots else GroupNode(path=ROOT_PATH)


def group_from_data(data: dict, path: str) -> GroupNode:
    """A condition tree stored as JSON (an action's `when`, in ConditionGroupInput's shape:
    logic, negate, conditions, groups) as the evaluator walks it; `path` is its input path
    ("actions.1.when"), which its trace entries extend. Saved trees were validated whole."""
    node = GroupNode(
        path=path,
        logic=data.get("logic") or ConditionLogic.AND,
        negate=bool(data.get("negate")),
    )
    for index, leaf in enumerate(data.get("conditions") or ()):
        node.conditions.append(
            LeafNode(
                path=f"{path}.conditions.{index}",
                field=leaf.get("field") or "",
                operator=leaf.get("operator") or "",
                value=leaf.get("value"),
                negate=bool(leaf.get("negate")),
                previous=bool(leaf.get("previous")),
                value_field=leaf.get("valueField") or "",
            )
        )
    for index, child in enumerate(data.get("groups") or ()):
        node.groups.append(group_from_data(child, f"{path}.groups.{index}"))
    return node
