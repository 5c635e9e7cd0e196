"""The cause chain: which run is executing actions right now, in this thread or task.

While a run executes its actions, `running(...)` sets the chain in a context variable. A write an
action makes raises a model event; `emit_event` reads the chain to attribute the new runs to it
(parent, root, depth), to stop a rule re-triggering itself, to cut chains that grow too deep, and
to count the new runs and the actions' writes against the tree's fan-out budget (budget.py).
"""

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class Chain:
    log_id: int
    root_log_id: int
    depth: int
    rule_id: int
    rule_names: tuple[str, ...]  # the rules of the chain, root first, this run's rule last
    user_id: int | None


_current: ContextVar[Chain | None] = ContextVar("automation_chain", default=None)


def current_chain() -> Chain | None:
    return _current.get()


@contextlib.contextmanager
def running(chain: Chain):
    token = _current.set(chain)
    try:
        yield
    finally:
        _current.reset(token)
