"""What this project's database backends (config/sqlite, config/postgresql) add to Django's:
work done right before a transaction commits, inside it.

Django offers `transaction.on_commit` (after the commit) and nothing before it. An on-commit
callback that has a `before_commit` attribute is called here, just before COMMIT, with the
connection and every pending callback that shares that same `before_commit` (one call for all of
them, in registration order): the run stream journals a transaction's events this way, in the
transaction that changed the runs (automation/live/journal.py). Callbacks of a savepoint that was
rolled back are already gone from the list, as Django drops them.

An error there fails the commit like a database error does: the transaction rolls back and the
error propagates.
"""

from django.db import DatabaseError


class BeforeCommitMixin:
    """For a DatabaseWrapper: run the pending on-commit callbacks' `before_commit` hooks first."""

    runs_before_commit_hooks = True

    def commit(self):
        hooks: dict = {}
        for _savepoints, callback, _robust in self.run_on_commit:
            hook = getattr(callback, "before_commit", None)
            if hook is not None:
                hooks.setdefault(hook, []).append(callback)
        for hook, callbacks in hooks.items():
            try:
                hook(self, callbacks)
            except DatabaseError:
                raise
            except Exception as exc:
                # Atomic rolls back on a DatabaseError only; anything else would leave the
                # transaction open behind it.
                raise DatabaseError(f"before-commit hook failed: {exc!r}") from exc
        super().commit()
