"""Fair queueing of runs across organizations.

A plain first-in-first-out queue lets one organization's backlog delay everyone: 13,000 queued
runs of one tenant kept another's run PENDING for minutes. So runs do not wait in Huey's queue;
they wait here, in one queue per organization, and Huey's queue carries only anonymous wake-ups
(one per run), each telling a worker "take the next batch" (automation/runs/worker.py).

Which batch a worker takes:
- **round robin over organizations with runs waiting**: an organization that was served goes to
  the back of the line; one that just started waiting goes in front of the one served last, so a
  newcomer never waits behind more than one batch of each organization already waiting;
- **small batches while others are about**: an organization alone takes up to
  AUTOMATION_RUN_BATCH_SIZE runs at once (throughput: one transaction, one commit); while
  another organization has runs waiting, or had a batch in the last RECENT_SECONDS, at most
  AUTOMATION_FAIR_BATCH_SIZE, so a batch holds a worker (and on SQLite the write lock) briefly
  when another tenant's next run may arrive any moment;
- **a cap on workers per organization while others are about**: an organization with
  AUTOMATION_WORKERS_PER_ORGANIZATION batches in progress is passed over for the next one under
  its cap; when everyone waiting is at the cap, the worker takes nothing, so a worker stays free
  for another tenant's next run, and slow runs (webhooks) of one tenant cannot hold every
  worker. An organization alone (nobody else waiting or served lately) may use every worker.

A batch in progress holds a lease that expires after AUTOMATION_HEARTBEAT_STALE_SECONDS, so a
worker that dies without releasing it frees its organization's slot by itself.

The queues live where Huey's does, so every process sees the same ones: in Redis (each operation
one Lua script, atomic across processes) or in Huey's SQLite file (each operation one exclusive
transaction). What is taken off a queue is in the worker's memory only, as a Huey task is: a run
lost with a dying worker stays PENDING in the database, and the sweeper queues it again.
"""

import threading
import time
import uuid
from dataclasses import dataclass, field

from django.conf import settings

# How long an organization served counts as "about" (see the module's docstring).
RECENT_SECONDS = 10


@dataclass(frozen=True)
class Batch:
    """Runs of one organization taken off its queue, and the lease of the worker taking them."""

    organization_id: int
    log_ids: list[int]
    lease: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(frozen=True)
class Policy:
    """The numbers a pop follows, from settings (see the module's docstring)."""

    batch_size: int
    fair_batch_size: int
    workers_per_organization: int
    lease_seconds: float

    @classmethod
    def from_settings(cls) -> "Policy":
        return cls(
            batch_size=max(settings.AUTOMATION_RUN_BATCH_SIZE, 1),
            fair_batch_size=max(settings.AUTOMATION_FAIR_BATCH_SIZE, 1),
            workers_per_organization=max(settings.AUTOMATION_WORKERS_PER_ORGANIZATION, 1),
            lease_seconds=settings.AUTOMATION_HEARTBEAT_STALE_SECONDS,
        )


# --- In Redis ------------------------------------------------------------------------------------

# KEYS: Huey's queue. ARGV: prefix, organization id, how many log ids, the log ids, the wake-ups
# (Huey's messages, pushed as RedisStorage.enqueue does). A new organization goes in front of
# the one served last (its turn is the current turn - 0.5; served ones go back at a new turn).
_REDIS_PUSH = """
local prefix, org, count = ARGV[1], ARGV[2], tonumber(ARGV[3])
local runs = prefix .. 'runs:' .. org
for i = 4, 3 + count do redis.call('RPUSH', runs, ARGV[i]) end
redis.call('INCRBY', prefix .. 'size', count)
if not redis.call('ZSCORE', prefix .. 'ready', org) then
  local turn = tonumber(redis.call('GET', prefix .. 'turn') or '0')
  redis.call('ZADD', prefix .. 'ready', turn - 0.5, org)
end
for i = 4 + count, #ARGV do redis.call('LPUSH', KEYS[1], ARGV[i]) end
return 1
"""

# ARGV: prefix, now, workers per organization, batch size, fair batch size, lease seconds, lease,
# recent seconds. Returns false, or {organization id, {log ids}}. The choice is `choose` below.
_REDIS_POP = """
local prefix, now, cap = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local ready, recent = prefix .. 'ready', prefix .. 'recent'
local candidates = redis.call('ZRANGE', ready, 0, 63)
if #candidates == 0 then return false end
redis.call('ZREMRANGEBYSCORE', recent, '-inf', now - tonumber(ARGV[8]))
local function others_about(org)
  local about = redis.call('ZCARD', recent)
  if redis.call('ZSCORE', recent, org) then about = about - 1 end
  return #candidates > 1 or about > 0
end
local chosen = nil
for _, org in ipairs(candidates) do
  local leases = prefix .. 'leases:' .. org
  redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
  if redis.call('ZCARD', leases) < cap then chosen = org break end
end
if chosen == nil then
  if others_about(candidates[1]) then return false end
  chosen = candidates[1]
end
local limit = tonumber(ARGV[4])
if others_about(chosen) then limit = tonumber(ARGV[5]) end
redis.call('ZADD', recent, now, chosen)
redis.call('EXPIRE', recent, 2 * tonumber(ARGV[8]))
local runs = prefix .. 'runs:' .. chosen
local ids = redis.call('LPOP', runs, limit) or {}
redis.call('DECRBY', prefix .. 'size', #ids)
if redis.call('LLEN', runs) > 0 then
  redis.call('ZADD', ready, redis.call('INCR', prefix .. 'turn'), chosen)
else
  redis.call('ZREM', ready, chosen)
end
local leases = prefix .. 'leases:' .. chosen
redis.call('ZADD', leases, now + tonumber(ARGV[6]), ARGV[7])
redis.call('EXPIRE', leases, math.ceil(tonumber(ARGV[6])) + 1)
return {chosen, ids}
"""

# ARGV: prefix, organization id, lease. Returns how many runs still wait.
_REDIS_RELEASE = """
redis.call('ZREM', ARGV[1] .. 'leases:' .. ARGV[2], ARGV[3])
return tonumber(redis.call('GET', ARGV[1] .. 'size') or '0')
"""


def choose(candidates: list[int], busy: dict[int, int], recent: set[int], policy: Policy):
    """(organization, batch size) to serve next, or None to leave the worker for others.

    `candidates`: organizations with runs waiting, in turn order; `busy`: batches in progress
    per organization; `recent`: organizations served in the last RECENT_SECONDS.
    """

    def others_about(org: int) -> bool:
        return len(candidates) > 1 or bool(recent - {org})

    chosen = next(
        (org for org in candidates if busy.get(org, 0) < policy.workers_per_organization), None
    )
    if chosen is None:
        if others_about(candidates[0]):
            return None  # everyone waiting is at its cap: keep this worker for the others
        chosen = candidates[0]  # alone: an organization may use every worker
    size = policy.fair_batch_size if others_about(chosen) else policy.batch_size
    return chosen, size


class RedisFairQueues:
    """The organizations' queues in Redis, under `automation:fair:<huey name>:`."""

    def __init__(self, storage):
        self.storage = storage  # Huey's RedisStorage: its connection, name and queue
        self.conn = conn = storage.conn
        self.prefix = f"automation:fair:{storage.name}:"
        self.queue_key = storage.queue_key
        self._push = conn.register_script(_REDIS_PUSH)
        self._pop = conn.register_script(_REDIS_POP)
        self._release = conn.register_script(_REDIS_RELEASE)

    def push(self, organization_id: int, log_ids: list[int], wakeups=()) -> None:
        self._push(
            keys=[self.queue_key],
            args=[self.prefix, organization_id, len(log_ids), *log_ids, *wakeups],
        )

    def pop(self, policy: Policy) -> Batch | None:
        lease = uuid.uuid4().hex
        found = self._pop(
            args=[
                self.prefix,
                time.time(),
                policy.workers_per_organization,
                policy.batch_size,
                policy.fair_batch_size,
                policy.lease_seconds,
                lease,
                RECENT_SECONDS,
            ]
        )
        if not found:
            return None
        organization, ids = found
        return Batch(int(organization), [int(i) for i in ids], lease)

    def release(self, batch: Batch) -> int:
        return max(int(self._release(args=[self.prefix, batch.organization_id, batch.lease])), 0)

    def size(self) -> int:
        return max(int(self.conn.get(f"{self.prefix}size") or 0), 0)

    def flush(self) -> None:
        keys = list(self.conn.scan_iter(match=f"{self.prefix}*", count=1000))
        if keys:
            self.conn.delete(*keys)


# --- In Huey's SQLite file -----------------------------------------------------------------------

SQLITE_DDL = [
    "create table if not exists fair_run (id integer primary key, queue text not null, "
    "org integer not null, log_id integer not null)",
    "create index if not exists fair_run_queue_org on fair_run (queue, org, id)",
    "create table if not exists fair_ready (queue text not null, org integer not null, "
    "turn real not null, primary key (queue, org))",
    "create index if not exists fair_ready_turn on fair_ready (queue, turn)",
    "create table if not exists fair_lease (lease text primary key, queue text not null, "
    "org integer not null, expires real not null)",
    "create index if not exists fair_lease_org on fair_lease (queue, org)",
    "create table if not exists fair_recent (queue text not null, org integer not null, "
    "served real not null, primary key (queue, org))",
]
_TURN_KEY = "fair_turn"


class SqliteFairQueues:
    """The organizations' queues in Huey's SQLite file, beside its task table (the same
    connection and lock as the storage, `storage.db`)."""

    def __init__(self, storage):
        self.storage = storage
        self.name = storage.name

    def _turn(self, cursor) -> int:
        cursor.execute(
            "select value from counter where queue = ? and key = ?", (self.name, _TURN_KEY)
        )
        row = cursor.fetchone()
        return row[0] if row else 0

    def push(self, organization_id: int, log_ids: list[int], wakeups=()) -> None:
        with self.storage.db(commit=True) as cursor:
            cursor.executemany(
                "insert into fair_run (queue, org, log_id) values (?, ?, ?)",
                [(self.name, organization_id, log_id) for log_id in log_ids],
            )
            cursor.execute(
                "insert or ignore into fair_ready (queue, org, turn) values (?, ?, ?)",
                (self.name, organization_id, self._turn(cursor) - 0.5),
            )
            cursor.executemany(  # as SqliteStorage.enqueue does, in the same transaction
                "insert into task (queue, data, priority) values (?, ?, 0)",
                [(self.name, self.storage.to_blob(data)) for data in wakeups],
            )
        self.storage.enqueued()

    def pop(self, policy: Policy) -> Batch | None:
        # A look without the write lock first, as Huey's dequeue does: usually nothing waits.
        if not self.storage.sql(
            "select 1 from fair_ready where queue = ? limit 1", (self.name,), results=True
        ):
            return None
        now = time.time()
        with self.storage.db(commit=True) as cursor:
            cursor.execute(
                "select org from fair_ready where queue = ? order by turn, org limit 64",
                (self.name,),
            )
            candidates = [row[0] for row in cursor.fetchall()]
            if not candidates:
                return None
            cursor.execute(
                "delete from fair_lease where queue = ? and expires < ?", (self.name, now)
            )
            cursor.execute(
                "delete from fair_recent where queue = ? and served < ?",
                (self.name, now - RECENT_SECONDS),
            )
            cursor.execute(
                "select org, count(*) from fair_lease where queue = ? group by org", (self.name,)
            )
            busy = dict(cursor.fetchall())
            cursor.execute("select org from fair_recent where queue = ?", (self.name,))
            recent = {row[0] for row in cursor.fetchall()}
            choice = choose(candidates, busy, recent, policy)
            if choice is None:
                return None
            chosen, limit = choice
            cursor.execute(
                "insert or replace into fair_recent (queue, org, served) values (?, ?, ?)",
                (self.name, chosen, now),
            )
            cursor.execute(
                "select id, log_id from fair_run where queue = ? and org = ? order by id limit ?",
                (self.name, chosen, limit + 1),
            )
            rows = cursor.fetchall()
            taken, more = rows[:limit], len(rows) > limit
            if taken:
                cursor.execute(
                    "delete from fair_run where queue = ? and org = ? and id <= ?",
                    (self.name, chosen, taken[-1][0]),
                )
            if more:
                turn = self._turn(cursor) + 1
                cursor.execute(
                    "insert or replace into counter (queue, key, value) values (?, ?, ?)",
                    (self.name, _TURN_KEY, turn),
                )
                cursor.execute(
                    "update fair_ready set turn = ? where queue = ? and org = ?",
                    (turn, self.name, chosen),
                )
            else:
                cursor.execute(
                    "delete from fair_ready where queue = ? and org = ?", (self.name, chosen)
                )
            batch = Batch(chosen, [log_id for _, log_id in taken])
            cursor.execute(
                "insert into fair_lease (lease, queue, org, expires) values (?, ?, ?, ?)",
                (batch.lease, self.name, chosen, now + policy.lease_seconds),
            )
        return batch

    def release(self, batch: Batch) -> int:
        self.storage.sql("delete from fair_lease where lease = ?", (batch.lease,), commit=True)
        return self.size()

    def size(self) -> int:
        rows = self.storage.sql(
            "select count(*) from fair_run where queue = ?", (self.name,), results=True
        )
        return rows[0][0]

    def flush(self) -> None:
        with self.storage.db(commit=True) as cursor:
            for table in ("fair_run", "fair_ready", "fair_lease", "fair_recent"):
                cursor.execute(f"delete from {table} where queue = ?", (self.name,))  # noqa: S608
            cursor.execute(
                "delete from counter where queue = ? and key = ?", (self.name, _TURN_KEY)
            )


# --- In this process's memory (Huey's memory storage: tests and scripts) ------------------------


class MemoryFairQueues:
    """The same queues as plain Python objects, for a Huey whose queue is in memory."""

    def __init__(self, storage):
        self.storage = storage  # the Huey storage its wake-ups go to
        self.lock = threading.Lock()
        self.runs: dict[int, list[int]] = {}
        self.ready: dict[int, float] = {}
        self.leases: dict[str, tuple[int, float]] = {}
        self.recent: dict[int, float] = {}
        self.turn = 0

    def push(self, organization_id: int, log_ids: list[int], wakeups=()) -> None:
        with self.lock:
            self.runs.setdefault(organization_id, []).extend(log_ids)
            self.ready.setdefault(organization_id, self.turn - 0.5)
        for data in wakeups:
            self.storage.enqueue(data)

    def pop(self, policy: Policy) -> Batch | None:
        now = time.time()
        with self.lock:
            if not self.ready:
                return None
            self.leases = {k: v for k, v in self.leases.items() if v[1] >= now}
            self.recent = {k: v for k, v in self.recent.items() if v >= now - RECENT_SECONDS}
            candidates = sorted(self.ready, key=lambda org: (self.ready[org], org))[:64]
            busy = {}
            for org, _expires in self.leases.values():
                busy[org] = busy.get(org, 0) + 1
            choice = choose(candidates, busy, set(self.recent), policy)
            if choice is None:
                return None
            chosen, limit = choice
            self.recent[chosen] = now
            queue = self.runs[chosen]
            taken, self.runs[chosen] = queue[:limit], queue[limit:]
            if self.runs[chosen]:
                self.turn += 1
                self.ready[chosen] = self.turn
            else:
                del self.ready[chosen], self.runs[chosen]
            batch = Batch(chosen, taken)
            self.leases[batch.lease] = (chosen, now + policy.lease_seconds)
            return batch

    def release(self, batch: Batch) -> int:
        with self.lock:
            self.leases.pop(batch.lease, None)
        return self.size()

    def size(self) -> int:
        with self.lock:
            return sum(len(ids) for ids in self.runs.values())

    def flush(self) -> None:
        with self.lock:
            self.runs, self.ready, self.leases, self.recent, self.turn = {}, {}, {}, {}, 0
