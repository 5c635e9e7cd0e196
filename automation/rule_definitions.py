"""A rule's condition tree and actions, cached per process for its runs.

Every run needs them, and reading them is three queries (groups, leaves, actions) in a run that
otherwise needs few. They change only when the rules change, and every such change bumps the rule
index version when it commits (automation/rule_version.py, free to read); so a process keeps what
it read at a version and reads again once the version has moved, or the rule's revision differs.
A transaction that changed rules itself and has not committed yet reads them fresh.

The cached objects are shared by threads: callers read them and never modify them.
"""

import threading
from dataclasses import dataclass

from automation import conditions, rule_index
from automation.conditions import GroupNode
from automation.rule_version import current_version


@dataclass(frozen=True)
class RuleDefinition:
    # None when the tree could not be loaded: evaluate_conditions then tries itself and fails
    # closed with the error in the run's log.
    tree: GroupNode | None
    actions: tuple  # RuleAction instances, in order

    @classmethod
    def load(cls, rule) -> "RuleDefinition":
        try:
            tree = conditions.load_condition_tree(rule)
        except Exception:
            tree = None
        return cls(tree=tree, actions=tuple(rule.actions.order_by("order", "id")))


_lock = threading.Lock()
# rule id -> (version, revision, definition)
_cache: dict[int, tuple[object, int, RuleDefinition]] = {}


def rule_definition(rule) -> RuleDefinition:
    if rule_index.rules_changed_in_this_transaction():
        return RuleDefinition.load(rule)
    try:
        version = current_version()
    except Exception:  # Redis down: the version is unknown, so nothing cached can be trusted
        return RuleDefinition.load(rule)
    cached = _cache.get(rule.pk)
    if cached is not None and cached[0] == version and cached[1] == rule.revision:
        return cached[2]
    # Read after the version: a change racing with this read is stored under the older version,
    # so the next run reads again.
    definition = RuleDefinition.load(rule)
    if definition.tree is None:
        return definition
    with _lock:
        _cache[rule.pk] = (version, rule.revision, definition)
    return definition


def forget() -> None:
    """Drop every cached definition (tests: behave like a process that just started)."""
    with _lock:
        _cache.clear()
