"""The rule index's version token: "have the rules changed since I built my index?"

Read on every save of an automatable model, so it must cost (almost) nothing, and a change made
through one process must be seen by the next save any other process handles.

Embedded mode (no Redis): a token in a file of the data directory, rewritten on every bump and
mapped into each process's memory, so a lookup is a memory read that a separate `run_huey` or
shell process sees as well.

Distributed mode: a key in Redis. Asking Redis on every save (one round trip, ~50-100 us) was a
third of an unwatched save on PostgreSQL, so each process keeps the value it last read and lets
Redis tell it when the key changes: one connection per process has Redis report every write to
the key (CLIENT TRACKING in broadcast mode, redirected to itself, subscribed to the invalidation
channel). A lookup polls that socket (no round trip) and reads the key again only after a change
message, or when in doubt: before the connection is up, after it failed (Redis restarted), after
a fork, or on a Redis without CLIENT TRACKING (before 6.0). A change message leaves Redis with
the writer's own reply, so by the time the writer has told anyone about its new rule, the other
processes have it in their socket. This process's own bumps forget the known value at once.
"""

import functools
import logging
import mmap
import os
import select
import threading
import time
import uuid

import redis
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

logger = logging.getLogger("automation.index.watching")

VERSION_KEY = "automation:rule-index-version"
INVALIDATION_CHANNEL = "__redis__:invalidate"
RECONNECT_EVERY_SECONDS = 1.0


def current_version() -> str | bytes:
    """The rules' version token: compare it for equality only. Raises while Redis is down."""
    path = _version_file()
    if path:
        return _file_version(path)
    return _watch().version()


def bump_version() -> None:
    """Tell every process that the rules changed (they rebuild on their next lookup)."""
    path = _version_file()
    if path:
        _write_token(path)
        return
    _redis().set(VERSION_KEY, uuid.uuid4().hex)
    _watch().forget()


# --- Embedded: a token in a shared file --------------------------------------------------------
#
# The file holds TOKEN_SIZE random bytes, rewritten in place on every bump. Each process maps it
# into memory once (MAP_SHARED), so a lookup reads the page every process shares: no system call
# per save (a stat() per save was measurable on a save of 0.2 ms). A read racing with a write
# may see a mix of both tokens: that only looks like one more change, and costs a rebuild.

TOKEN_SIZE = 16
_mapped: tuple[str, mmap.mmap] | None = None  # (path, map); a forked child shares the map


def _file_version(path: str) -> bytes:
    global _mapped
    mapped = _mapped
    if mapped is None or mapped[0] != path:
        with _lock:
            mapped = _mapped = (path, _map(path))
    return mapped[1][:TOKEN_SIZE]


def _map(path: str) -> mmap.mmap:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        _write_token(path)
        descriptor = os.open(path, os.O_RDONLY)
    try:
        if os.fstat(descriptor).st_size < TOKEN_SIZE:  # an older format, or a torn creation
            _write_token(path)
        return mmap.mmap(descriptor, TOKEN_SIZE, prot=mmap.PROT_READ)
    finally:
        os.close(descriptor)  # the map keeps the file


def _write_token(path: str) -> None:
    # In place (never replaced): every process's map must keep seeing this file.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.pwrite(descriptor, os.urandom(TOKEN_SIZE), 0)
    finally:
        os.close(descriptor)


# The settings, read once: Django's settings object costs more than the rest of a lookup.


@functools.cache
def _version_file() -> str | None:
    return settings.AUTOMATION_RULE_INDEX_VERSION_FILE


@functools.cache
def _redis_url() -> str:
    return settings.REDIS_URL


@receiver(setting_changed)
def _forget_settings(setting, **kwargs):
    if setting in ("AUTOMATION_RULE_INDEX_VERSION_FILE", "REDIS_URL"):
        _version_file.cache_clear()
        _redis_url.cache_clear()


def _read(client: redis.Redis) -> str:
    """One round trip (two the very first time, when the key does not exist yet)."""
    version = client.get(VERSION_KEY)
    if version is None:
        # Never set or flushed: start a new version, so every process rebuilds.
        client.set(VERSION_KEY, uuid.uuid4().hex, nx=True)
        version = client.get(VERSION_KEY)
    return version.decode()


class VersionWatch:
    """The Redis version as last read, valid until Redis reports a change to the key."""

    def __init__(self, url: str):
        self.url = url
        self._lock = threading.Lock()
        self._connection: redis.Connection | None = None
        self._poll: select.poll | None = None  # readable when Redis has pushed something
        self._known: str | None = None
        self._connect_after = 0.0
        self._unsupported = False
        self.client_id: int | None = None  # of the watching connection, as Redis knows it

    def version(self) -> str:
        with self._lock:
            if self._changed():
                self._known = None
            if self._known is not None:
                return self._known
            version = _read(_redis())
            # Keep it only if no change message arrived while the GET was on its way.
            if not self._changed():
                self._known = version
            return version

    def forget(self) -> None:
        with self._lock:
            self._known = None

    @property
    def watching(self) -> bool:
        return self._connection is not None

    def _changed(self) -> bool:
        """Read what Redis pushed; True when the known version may be stale or nothing is known."""
        if self._connection is None:
            self._connect()
            return True
        if not self._poll.poll(0):  # the common case: one cheap system call, no round trip
            return False
        try:
            changed = False
            while self._connection.can_read(timeout=0):
                self._connection.read_response()  # any message: the key changed, or a flush
                changed = True
            return changed
        except (redis.RedisError, OSError):
            logger.warning("rule index: lost the Redis change feed; reading the version per save")
            self._close()
            return True

    def _connect(self) -> None:
        if self._unsupported or time.monotonic() < self._connect_after:
            return
        self._connect_after = time.monotonic() + RECONNECT_EVERY_SECONDS
        # A pool of its own, for one connection that is never given back. RESP2: a subscribed
        # connection then gets plain pub/sub messages.
        pool = redis.ConnectionPool.from_url(
            self.url, protocol=2, socket_timeout=2, socket_connect_timeout=2
        )
        try:
            connection = pool.get_connection()
            client_id = self._call(connection, "CLIENT", "ID")
            self._call(
                connection,
                "CLIENT",
                "TRACKING",
                "ON",
                "REDIRECT",
                client_id,
                "BCAST",
                "PREFIX",
                VERSION_KEY,
            )
            self._call(connection, "SUBSCRIBE", INVALIDATION_CHANNEL)
        except redis.ResponseError as exc:
            logger.warning("rule index: Redis cannot report changes (%s); one GET per save", exc)
            self._unsupported = True
            pool.disconnect()
        except (redis.RedisError, OSError):
            pool.disconnect()  # Redis is down: a GET will say so; try again later
        else:
            self._connection, self.client_id = connection, client_id
            self._poll = select.poll()
            self._poll.register(connection._sock.fileno(), select.POLLIN | select.POLLERR)

    @staticmethod
    def _call(connection: redis.Connection, *command):
        connection.send_command(*command)
        return connection.read_response()

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.disconnect()
            self._connection, self._poll = None, None
        self._known = None


_lock = threading.Lock()
_client: tuple[str, redis.Redis] | None = None
_current_watch: VersionWatch | None = None


def _redis() -> redis.Redis:
    """This process's Redis client for the version (its pool is shared by threads).

    A plain redis-py client, not Django's cache, whose API costs about four times the round trip
    itself (a client object and key handling per call). Short timeouts: while Redis does not
    answer, lookups fall back to SQL (rule_index) instead of hanging.
    """
    global _client
    url = _redis_url()
    client = _client
    if client is None or client[0] != url:
        with _lock:
            client = _client = (
                url,
                redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2),
            )
    return client[1]


def _watch() -> VersionWatch:
    """This process's watch."""
    global _current_watch
    watch = _current_watch
    if watch is None or watch.url != _redis_url():
        with _lock:
            watch = _current_watch = VersionWatch(_redis_url())
    return watch


def _forget_after_fork() -> None:
    # A forked child must not read its parent's socket (nor close it: that would cut the
    # parent's feed too); it makes its own on its first lookup.
    global _current_watch
    _current_watch = None


os.register_at_fork(after_in_child=_forget_after_fork)


def reset() -> None:
    """Forget the watch (tests: behave like a process that just started)."""
    global _current_watch
    with _lock:
        if _current_watch is not None:
            _current_watch._close()
        _current_watch = None
