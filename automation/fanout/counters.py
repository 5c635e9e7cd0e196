"""Where the fan-out budgets' counters live (automation/fanout/budget.py): Redis when REDIS_URL is
set, shared by every process; else this process's memory (embedded mode).

Each method is one round trip to Redis: a count is on the path of every watched write and every
record action, so counts that go together (a run and its bytes, a write and its bytes) are sent
together (`add_with_amount`).
"""

import math
import threading
import time

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

KEY_PREFIX = "automation:budget:"
# A counter's window (the per-minute budgets), for pruning expired keys from memory.
WINDOW_SECONDS = 60


class RedisCounters:
    """Counters shared by every process, in Redis.

    A plain redis-py client rather than Django's cache API: there, add() + incr() are three round
    trips per counter (its incr() asks EXISTS first, and a key expiring between the two comes back
    without a TTL), and its client has no timeout, so a Redis that stops answering would hang
    every watched write.
    """

    def __init__(self, url: str):
        # Short timeouts and one immediate retry (a connection Redis closed when it restarted):
        # while Redis does not answer, a write waits at most about two seconds, then goes on.
        self.client = redis.Redis.from_url(
            url,
            socket_timeout=1,
            socket_connect_timeout=1,
            retry=Retry(NoBackoff(), 1),
        )

    def add(self, counters: list[tuple[str, int]], limit_key: str | None = None):
        pipe = self.client.pipeline(transaction=True)  # one round trip, applied as a whole
        read = _queue_add(pipe, counters, limit_key)
        return read(pipe.execute())

    def set_limits(self, limits: list[tuple[str, int]], ttl: int) -> None:
        pipe = self.client.pipeline(transaction=True)
        for key, value in limits:
            pipe.set(key, value, ex=ttl)
        pipe.execute()

    def add_amount(
        self, counters: list[tuple[str, int]], amount: int, quota_key: str | None
    ) -> tuple[list[int], int | None]:
        """Add `amount` to each counter, and to the quota's: (new counts, the quota's total, or
        None when it was never measured: it has no expiry then). One round trip."""
        pipe = self.client.pipeline(transaction=True)
        read = _queue_add_amount(pipe, counters, amount, quota_key)
        return read(pipe.execute())

    def add_amounts(self, calls: list[tuple]) -> list[tuple]:
        """`add_amount(*call)` for each of `calls` in one round trip: their answers.

        A batch's calls share counters (the organization's, its quota), so their amounts are
        summed per key first: one INCRBY per key (and one EXPIRE, or TTL for a quota), where
        there was one per call and key (300 commands for a batch of 50 webhooks, now 104: each
        run's own tree keeps a counter of its own). Each call's answer is then the key's total
        as it was right after that call's share, as if the INCRBYs had been sent one by one:
        MULTI/EXEC applies them at once, nothing comes between them.
        """
        added: dict[str, int] = {}
        expiries: dict[str, int] = {}  # a counter's key -> its TTL (the last call's, as in turn)
        quotas: list[str] = []
        for counters, amount, quota_key in calls:
            for key, ttl in counters:
                added[key] = added.get(key, 0) + amount
                expiries[key] = ttl
            if quota_key is not None:
                added[quota_key] = added.get(quota_key, 0) + amount
                if quota_key not in quotas:
                    quotas.append(quota_key)
        pipe = self.client.pipeline(transaction=True)
        for key, amount in added.items():
            pipe.incrby(key, amount)
        for key, ttl in expiries.items():
            pipe.expire(key, ttl)
        for key in quotas:
            pipe.ttl(key)
        answers = pipe.execute()
        totals = dict(zip(added, answers[: len(added)], strict=True))
        quota_ttls = dict(zip(quotas, answers[len(added) + len(expiries) :], strict=True))
        # The total before the batch, then each call's share added in turn.
        running = {key: totals[key] - amount for key, amount in added.items()}
        results = []
        for counters, amount, quota_key in calls:
            counts = []
            for key, _ttl in counters:
                running[key] += amount
                counts.append(running[key])
            quota = None
            if quota_key is not None:
                running[quota_key] += amount
                quota = running[quota_key] if quota_ttls[quota_key] >= 0 else None
            results.append((counts, quota))
        return results

    def add_with_amount(self, add: tuple, add_amount: tuple) -> tuple:
        """`add(*add)` and `add_amount(*add_amount)` in one round trip: both answers."""
        pipe = self.client.pipeline(transaction=True)
        read_add = _queue_add(pipe, *add)
        read_amount = _queue_add_amount(pipe, *add_amount)
        answers = pipe.execute()
        split = len(answers) - read_amount.commands
        return read_add(answers[:split]), read_amount(answers[split:])

    def set(self, key: str, value: int, ttl: int) -> None:
        self.client.set(key, value, ex=ttl)

    def clear(self, prefix: str = KEY_PREFIX) -> None:
        keys = list(self.client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            self.client.delete(*keys)


def _queue_add(pipe, counters: list[tuple[str, int]], limit_key: str | None):
    """Queue RedisCounters.add's commands on `pipe`; returns the reader of their answers."""
    for key, ttl in counters:
        pipe.incr(key)
        pipe.expire(key, ttl)
    if limit_key is not None:
        pipe.get(limit_key)

    def read(answers):
        limit = answers[-1] if limit_key is not None else None
        return answers[: 2 * len(counters) : 2], None if limit is None else int(limit)

    return read


def _queue_add_amount(pipe, counters: list[tuple[str, int]], amount: int, quota_key):
    """Queue RedisCounters.add_amount's commands on `pipe`; returns the reader of their answers
    (its `commands`: how many answers it reads)."""
    for key, ttl in counters:
        pipe.incrby(key, amount)
        pipe.expire(key, ttl)
    if quota_key is not None:
        pipe.incrby(quota_key, amount)
        pipe.ttl(quota_key)

    def read(results):
        if quota_key is None:
            return results[::2], None
        total, ttl = results[-2:]
        return results[:-2:2], total if ttl >= 0 else None

    read.commands = 2 * len(counters) + (2 if quota_key is not None else 0)
    return read


class MemoryCounters:
    """Counters of this process (embedded mode, where one process runs the server and workers).

    Not Django's local-memory cache: it evicts a third of its keys when it holds 300, which would
    reset live counters.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.counts: dict[str, tuple[int, float]] = {}  # key -> (count, expires at, monotonic)
        self.next_prune = 0.0

    def add(self, counters: list[tuple[str, int]], limit_key: str | None = None):
        now = time.monotonic()
        totals = []
        with self.lock:
            if now >= self.next_prune:
                self.counts = {k: v for k, v in self.counts.items() if v[1] > now}
                self.next_prune = now + WINDOW_SECONDS
            for key, ttl in counters:
                count, expires = self.counts.get(key, (0, now))
                count = count + 1 if expires > now else 1
                self.counts[key] = (count, now + ttl)
                totals.append(count)
            limit, expires = self.counts.get(limit_key, (None, now))
        return totals, limit if expires > now else None

    def set_limits(self, limits: list[tuple[str, int]], ttl: int) -> None:
        now = time.monotonic()
        with self.lock:
            for key, value in limits:
                self.counts[key] = (value, now + ttl)

    def add_amount(
        self, counters: list[tuple[str, int]], amount: int, quota_key: str | None
    ) -> tuple[list[int], int | None]:
        """As RedisCounters.add_amount: a quota counter never measured has no expiry (inf)."""
        now = time.monotonic()
        totals = []
        with self.lock:
            for key, ttl in counters:
                count, expires = self.counts.get(key, (0, now))
                count = count + amount if expires > now else amount
                self.counts[key] = (count, now + ttl)
                totals.append(count)
            if quota_key is None:
                return totals, None
            total, expires = self.counts.get(quota_key, (0, now))
            if expires <= now:
                total, expires = 0, math.inf
            self.counts[quota_key] = (total + amount, expires)
        return totals, None if expires == math.inf else total + amount

    def add_amounts(self, calls: list[tuple]) -> list[tuple]:
        """As RedisCounters.add_amounts."""
        return [self.add_amount(*call) for call in calls]

    def add_with_amount(self, add: tuple, add_amount: tuple) -> tuple:
        """As RedisCounters.add_with_amount."""
        return self.add(*add), self.add_amount(*add_amount)

    def set(self, key: str, value: int, ttl: int) -> None:
        with self.lock:
            self.counts[key] = (value, time.monotonic() + ttl)

    def clear(self, prefix: str = KEY_PREFIX) -> None:
        with self.lock:
            self.counts = {k: v for k, v in self.counts.items() if not k.startswith(prefix)}
