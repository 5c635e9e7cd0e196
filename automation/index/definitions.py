"""A rule, its condition tree and its actions, cached per process for its runs.

Every run needs them, and reading them is four queries (the rule, groups, leaves, actions) in a
run that otherwise needs few. They change only when the rules change, and every such change bumps
the rule index version when it commits (automation/index/version.py, free to read; code that
changes rules with QuerySet.update() calls rules_changed() itself, see rule_index); so a process
keeps what it read at a version and reads again once the version has moved. A transaction that
changed rules itself and has not committed yet reads them fresh.

The cached objects are shared by threads: callers read them and never modify them.
"""

import threading
from dataclasses import dataclass

from automation.conditions import tree as condition_tree
from automation.conditions.tree import GroupNode
from automation.core.models import AutomationRule
from automation.index import watching as rule_index
from automation.index.version import current_version


@dataclass(frozen=True)
class RuleDefinition:
    rule: AutomationRule
    # None when the tree could not be loaded: evaluate_conditions then tries itself and fails
    # closed with the error in the run's log.
    tree: GroupNode | None
    actions: tuple  # RuleAction instances, in order

    @classmethod
    def load(cls, rule_id: int) -> "RuleDefinition":
        rule = AutomationRule.objects.get(pk=rule_id)
        try:
            tree = condition_tree.load_condition_tree(rule)
        except Exception:
            tree = None
        return cls(rule=rule, tree=tree, actions=tuple(rule.actions.order_by("order", "id")))


_lock = threading.Lock()
_cached_version: object = None
_cache: dict[int, RuleDefinition] = {}


def rule_definition(rule_id: int) -> RuleDefinition:
    global _cached_version
    if rule_index.rules_changed_in_this_transaction():
        return RuleDefinition.load(rule_id)
    try:
        version = current_version()
    except Exception:  # Redis down: the version is unknown, so nothing cached can be trusted
        return RuleDefinition.load(rule_id)
    if version == _cached_version:
        cached = _cache.get(rule_id)
        if cached is not None:
            return cached
    # Read after the version: a change racing with this read is kept under the older version,
    # so the next run reads again.
    definition = RuleDefinition.load(rule_id)
    if definition.tree is not None:
        with _lock:
            if version != _cached_version:
                _cache.clear()
                _cached_version = version
            _cache[rule_id] = definition
    return definition


def forget() -> None:
    """Drop every cached definition (tests: behave like a process that just started)."""
    global _cached_version
    with _lock:
        _cache.clear()
        _cached_version = None
