"""The rule index's version in Redis: read once, then kept fresh by Redis's change messages.

Distributed mode only: these tests need REDIS_URL (CI's distributed pass sets it).
"""

import os
import time
import uuid

import pytest
import redis

from automation.index import version as rule_version

REDIS_URL = os.environ.get("REDIS_URL", "")
pytestmark = pytest.mark.skipif(not REDIS_URL, reason="needs REDIS_URL (distributed mode)")


@pytest.fixture
def reads(settings, monkeypatch):
    """The version's store is Redis; counts the GETs a lookup makes.

    The key is the test's own: Redis reports changes of a key name whatever the database
    number, so another test process (or checkout) saving a rule on the same Redis server would
    otherwise count as a change here."""
    settings.AUTOMATION_RULE_INDEX_VERSION_FILE = None
    settings.REDIS_URL = REDIS_URL
    key = f"test-rule-index-version:{uuid.uuid4().hex}"
    monkeypatch.setattr(rule_version, "VERSION_KEY", key)
    store = redis.Redis.from_url(REDIS_URL)
    store.set(key, uuid.uuid4().hex)  # as a server that ran before left it
    rule_version.reset()
    counted = []
    real_read = rule_version._read

    def counting_read(client):
        counted.append(1)
        return real_read(client)

    monkeypatch.setattr(rule_version, "_read", counting_read)
    yield counted
    rule_version.reset()
    store.delete(key)


def another_process_bumps() -> str:
    """What a bump by another process looks like from here: a SET on another connection."""
    version = uuid.uuid4().hex
    redis.Redis.from_url(REDIS_URL).set(rule_version.VERSION_KEY, version)
    return version


def eventually(predicate, timeout=30.0):
    """Whether `predicate` holds within `timeout` s (generous: a busy machine is slow to deliver
    Redis's change message; it returns as soon as it holds)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def test_lookups_read_redis_once_then_only_after_a_change(reads):
    first = rule_version.current_version()
    assert len(reads) == 1
    for _ in range(50):
        assert rule_version.current_version() == first
    assert len(reads) == 1, "no round trip while nothing changed"

    changed = another_process_bumps()
    assert eventually(lambda: rule_version.current_version() == changed)
    assert len(reads) == 2
    for _ in range(50):
        assert rule_version.current_version() == changed
    assert len(reads) == 2


def test_this_process_sees_its_own_bump_at_once(reads):
    before = rule_version.current_version()
    rule_version.bump_version()
    assert rule_version.current_version() != before


def test_a_flush_is_a_change(reads):
    before = rule_version.current_version()
    redis.Redis.from_url(REDIS_URL).delete(rule_version.VERSION_KEY)
    assert eventually(lambda: rule_version.current_version() != before)


def test_a_lost_change_feed_falls_back_to_reading_and_reconnects(reads, monkeypatch):
    monkeypatch.setattr(rule_version, "RECONNECT_EVERY_SECONDS", 0.0)
    rule_version.current_version()
    watch = rule_version._watch()
    assert watch.watching
    # Redis restarted, or a proxy dropped the connection.
    redis.Redis.from_url(REDIS_URL).client_kill_filter(_id=watch.client_id)
    changed = another_process_bumps()
    assert eventually(lambda: rule_version.current_version() == changed)
    assert eventually(lambda: rule_version.current_version() and watch.watching)
    reads.clear()
    for _ in range(20):
        assert rule_version.current_version() == changed
    assert len(reads) == 0, "watching again: no round trips"


def test_a_redis_without_change_tracking_is_asked_every_time(reads, monkeypatch):
    def no_tracking(connection, *command):
        if command[:2] == ("CLIENT", "TRACKING"):
            raise redis.ResponseError("ERR unknown subcommand 'TRACKING'")
        return real_call(connection, *command)

    real_call = rule_version.VersionWatch._call
    monkeypatch.setattr(rule_version.VersionWatch, "_call", staticmethod(no_tracking))
    first = rule_version.current_version()
    assert rule_version.current_version() == first
    assert not rule_version._watch().watching
    assert len(reads) == 2, "one GET per lookup"
    changed = another_process_bumps()
    assert rule_version.current_version() == changed
