"""How many WebSocket connections a user (or an address, before it authenticates) holds at once.

One viewer opened 300 connections of 50 subscriptions each (15,000; the server's memory went from
122 to 470 MB): the cap per connection does not bound a client that opens more connections. So
each connection takes a slot, per user once authenticated (GRAPHQL_MAX_WEBSOCKETS_PER_USER), per
client address until then (GRAPHQL_MAX_UNAUTHENTICATED_WEBSOCKETS_PER_ADDRESS: a connection
waits up to a minute for its connection_init, and holds memory meanwhile).

A slot is a lease: the connection's id with an expiry LEASE_SECONDS ahead, renewed every
RENEW_SECONDS while the connection lives and given back when it ends. A process that crashes
never gives its slots back; their leases run out within LEASE_SECONDS.

Where the leases live: in Redis when REDIS_URL is set, shared by every server process behind the
balancer (one sorted set per user or address, scored by expiry; taking a slot is one Lua script:
drop expired leases, count, add), and in this process's memory otherwise (embedded mode, one
process). A Redis that does not answer refuses no one: the connection goes on, a warning is
logged (live events need Redis anyway, and a cap must not become an outage).
"""

import asyncio
import logging
import threading
import time
import uuid
import weakref

import redis
import redis.asyncio
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

logger = logging.getLogger("graphql_api.websocket_slots")

LEASE_SECONDS = 60
RENEW_SECONDS = 20
KEY_PREFIX = "automation:websockets:"

# KEYS[1]: the slots' sorted set; ARGV: holder, limit, now, lease seconds. 1 if taken (or held).
TAKE_SCRIPT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if not redis.call('ZSCORE', KEYS[1], ARGV[1])
   and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], tonumber(ARGV[3]) + tonumber(ARGV[4]), ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[4])) + 1)
return 1
"""


class MemorySlots:
    """Leases of this process (embedded mode). Used from one event loop; the lock is for tests
    and tools that touch it from another thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.leases: dict[str, dict[str, float]] = {}  # key -> {holder: expires at}

    async def take(self, key: str, holder: str, limit: int, now: float) -> bool:
        with self.lock:
            leases = self.leases.setdefault(key, {})
            for other, expires in list(leases.items()):
                if expires <= now:
                    del leases[other]
            if holder not in leases and len(leases) >= limit:
                return False
            leases[holder] = now + LEASE_SECONDS
            return True

    async def renew(self, keys: list[str], holder: str, now: float) -> None:
        with self.lock:
            for key in keys:
                self.leases.setdefault(key, {})[holder] = now + LEASE_SECONDS

    async def give_back(self, keys: list[str], holder: str) -> None:
        with self.lock:
            for key in keys:
                leases = self.leases.get(key, {})
                leases.pop(holder, None)
                if not leases:
                    self.leases.pop(key, None)

    def clear(self) -> None:
        with self.lock:
            self.leases = {}


class RedisSlots:
    """Leases shared by every process, in Redis. An asyncio client per event loop (a client is
    bound to the loop it first ran on; tests run a loop each), with short timeouts."""

    def __init__(self, url: str):
        self.url = url
        self.clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _client(self) -> redis.asyncio.Redis:
        loop = asyncio.get_running_loop()
        client = self.clients.get(loop)
        if client is None:
            client = self.clients[loop] = redis.asyncio.Redis.from_url(
                self.url,
                socket_timeout=1,
                socket_connect_timeout=1,
                retry=Retry(NoBackoff(), 1),
            )
        return client

    async def take(self, key: str, holder: str, limit: int, now: float) -> bool:
        taken = await self._client().eval(
            TAKE_SCRIPT, 1, KEY_PREFIX + key, holder, limit, now, LEASE_SECONDS
        )
        return bool(taken)

    async def renew(self, keys: list[str], holder: str, now: float) -> None:
        pipe = self._client().pipeline(transaction=False)
        for key in keys:
            pipe.zadd(KEY_PREFIX + key, {holder: now + LEASE_SECONDS})
            pipe.expire(KEY_PREFIX + key, LEASE_SECONDS + 1)
        await pipe.execute()

    async def give_back(self, keys: list[str], holder: str) -> None:
        pipe = self._client().pipeline(transaction=False)
        for key in keys:
            pipe.zrem(KEY_PREFIX + key, holder)
        await pipe.execute()

    def clear(self) -> None:
        client = redis.Redis.from_url(self.url)
        keys = list(client.scan_iter(match=f"{KEY_PREFIX}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


_stores: dict[str, RedisSlots | MemorySlots] = {}


def store() -> RedisSlots | MemorySlots:
    """This process's lease store for the current REDIS_URL (tests may change it)."""
    url = settings.REDIS_URL
    if url not in _stores:
        _stores[url] = RedisSlots(url) if url else MemorySlots()
    return _stores[url]


def clear() -> None:
    """Forget every lease (tests; an operator after a crash who will not wait a minute)."""
    store().clear()


class ConnectionSlots:
    """The slots one connection holds, renewed while it lives."""

    def __init__(self):
        self.holder = uuid.uuid4().hex
        self.keys: list[str] = []
        self._renewal: asyncio.Task | None = None

    async def take(self, key: str, limit: int) -> bool:
        """Take a slot of `key` (False when its `limit` are held by other connections)."""
        try:
            taken = await store().take(key, self.holder, limit, time.time())
        except (redis.RedisError, OSError) as exc:
            logger.warning("WebSocket slot of %s not counted: Redis failed (%s)", key, exc)
            return True
        if taken:
            self.keys.append(key)
            if self._renewal is None:
                self._renewal = asyncio.get_running_loop().create_task(self._renew())
        return taken

    async def give_back(self, key: str) -> None:
        if key in self.keys:
            self.keys.remove(key)
            await self._give_back([key])

    async def give_back_all(self) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
            self._renewal = None
        keys, self.keys = self.keys, []
        if keys:
            await self._give_back(keys)

    def abandon(self) -> None:
        """Stop renewing without giving back (nothing can be awaited): the leases run out."""
        if self._renewal is not None:
            self._renewal.cancel()
            self._renewal = None
        self.keys = []

    async def _give_back(self, keys: list[str]) -> None:
        try:
            await store().give_back(keys, self.holder)
        except (redis.RedisError, OSError) as exc:  # the leases run out on their own
            logger.warning("WebSocket slots %s not given back: Redis failed (%s)", keys, exc)

    async def renew(self) -> None:
        """Push the leases of the slots held LEASE_SECONDS ahead of now."""
        if not self.keys:
            return
        try:
            await store().renew(list(self.keys), self.holder, time.time())
        except (redis.RedisError, OSError) as exc:
            logger.warning("WebSocket slots not renewed: Redis failed (%s)", exc)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            await self.renew()
