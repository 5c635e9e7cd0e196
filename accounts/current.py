"""Who is acting right now: the request's user, or the user a run acts for.

A context variable rather than a thread-local, so it follows asyncio tasks and Django's
sync_to_async hops. `Auditable.save()` reads it to fill created_by / updated_by.
"""

import contextlib
from contextvars import ContextVar

_current_user: ContextVar = ContextVar("automation_current_user", default=None)


def get_current_user():
    """The acting user, or None when nobody (anonymous, system) is acting."""
    user = _current_user.get()
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return user


@contextlib.contextmanager
def acting_as(user):
    """Run a block as `user` (None for the system)."""
    token = _current_user.set(user)
    try:
        yield
    finally:
        _current_user.reset(token)
