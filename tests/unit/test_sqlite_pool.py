"""The embedded database backend (config/sqlite): closed connections are kept for the next one.

Under ASGI every request runs in a thread of its own, so without the pool each request opened
a SQLite connection (about 1 ms).
"""

import pytest
from django.db.utils import ConnectionHandler

from config.sqlite.base import DatabaseWrapper, forget_pools


@pytest.fixture
def database(tmp_path, django_db_blocker):
    """Settings of a database file of this test's own (not the test database, which is
    PostgreSQL in distributed mode), with the embedded mode's options."""
    handler = ConnectionHandler(
        {
            "default": {},
            "pool-test": {
                "ENGINE": "config.sqlite",
                "NAME": str(tmp_path / "pool.sqlite3"),
                "OPTIONS": {
                    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                    "transaction_mode": "IMMEDIATE",
                },
            },
        }
    )
    settings = handler.settings["pool-test"]
    with django_db_blocker.unblock():
        yield settings
    forget_pools()


def wrapper(settings) -> DatabaseWrapper:
    return DatabaseWrapper(settings, alias="pool-test")


def test_a_closed_connection_is_the_next_ones(database):
    first = wrapper(database)
    first.ensure_connection()
    opened = first.connection
    first.close()
    second = wrapper(database)
    second.ensure_connection()
    assert second.connection is opened
    with second.cursor() as cursor:  # still set up as Django sets a new one up
        assert cursor.execute("PRAGMA foreign_keys").fetchone() == (1,)
        assert cursor.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    second.close()


def test_a_transaction_left_open_is_rolled_back_before_the_connection_is_reused(database):
    first = wrapper(database)
    with first.cursor() as cursor:
        cursor.execute("CREATE TABLE kept (n integer)")
    first.set_autocommit(False)
    with first.cursor() as cursor:
        cursor.execute("INSERT INTO kept VALUES (1)")
    first.close()  # as a thread that died mid-transaction
    second = wrapper(database)
    with second.cursor() as cursor:
        assert cursor.execute("SELECT count(*) FROM kept").fetchone() == (0,)
    second.close()


def test_a_connection_closed_inside_an_atomic_block_is_not_handed_on(database):
    first = wrapper(database)
    first.ensure_connection()
    opened = first.connection
    first.in_atomic_block = True  # Django keeps it as this wrapper's until the block ends
    first.close()
    first.in_atomic_block = False
    second = wrapper(database)
    second.ensure_connection()
    assert second.connection is not opened
    second.close()


def test_in_memory_databases_are_not_pooled(database):
    memory = dict(database, NAME=":memory:")
    first = wrapper(memory)
    first.ensure_connection()
    opened = first.connection
    first._close()
    second = wrapper(memory)
    second.ensure_connection()
    assert second.connection is not opened
