"""Who is acting right now: the request's user, or the user a run acts for.

A context variable rather than a thread-local, so it follows asyncio tasks and Django's
sync_to_async hops. `Auditable.save()` reads it to fill created_by / updated_by.
"""

import contextlib
from contextvars import ContextVar

_current_user: ContextVar = ContextVar("automation_current_user", default=None)


def get_current_user():
    """The acting user, or None when nobody (anonymous, system) is acting."""
    holder = _current_user.get()
    user = holder[0] if holder else None
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return user


@contextlib.contextmanager
def acting_as(user):
    """Run a block as `user` (None for the system)."""
    # Stored inside a tuple: request.user is a lazy object, and asgiref inspects every context
    # variable's value (isinstance) when it hops between sync and async code, which would force
    # the lazy user to load from the database inside the event loop (SynchronousOnlyOperation).
    token = _current_user.set((user,))
    try:
        yield
    finally:
        _current_user.reset(token)
