"""Django's SQLite backend with a small pool of open connections per process.

Under ASGI each request's synchronous code runs in a thread of its own (asgiref's
ThreadSensitiveContext), so a connection kept by its thread (CONN_MAX_AGE) ends with the request,
and opening one (the file, Django's SQL functions, the pragmas) was about a millisecond of every
request of the embedded server. Here a closed connection goes back to a pool of this process
(rolled back first if a transaction was left open) and the next thread's connect takes it, as
psycopg's pool does for PostgreSQL (DATABASE_POOL). In-memory databases are not pooled.
It also runs the before-commit hooks of config/db.py.
"""

import queue
import threading

from django.db.backends.sqlite3 import base

from config.db import BeforeCommitMixin

# Idle connections kept per database file; more are closed.
IDLE_CONNECTIONS = 8

_pools: dict[str, queue.LifoQueue] = {}
_pools_lock = threading.Lock()


def _pool(name: str) -> queue.LifoQueue:
    with _pools_lock:
        pool = _pools.get(name)
        if pool is None:
            pool = _pools[name] = queue.LifoQueue(maxsize=IDLE_CONNECTIONS)
        return pool


class DatabaseWrapper(BeforeCommitMixin, base.DatabaseWrapper):
    def _pooled(self) -> bool:
        return not self.is_in_memory_db()

    def get_new_connection(self, conn_params):
        if self._pooled():
            try:
                return _pool(str(self.settings_dict["NAME"])).get_nowait()
            except queue.Empty:
                pass
        return super().get_new_connection(conn_params)

    def _close(self):
        connection = self.connection
        # Closed inside an atomic block, the connection stays this wrapper's until the block
        # ends (Django's close()): it is really closed then, never handed to another thread.
        if connection is None or not self._pooled() or self.in_atomic_block:
            return super()._close()
        try:
            with self.wrap_database_errors:
                if connection.in_transaction:
                    connection.rollback()
            _pool(str(self.settings_dict["NAME"])).put_nowait(connection)
        except (queue.Full, self.Database.Error):
            super()._close()


def forget_pools() -> None:
    """Close every idle connection (tests: a database file about to be deleted)."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        while True:
            try:
                pool.get_nowait().close()
            except queue.Empty:
                break
