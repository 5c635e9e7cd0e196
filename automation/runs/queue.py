"""The embedded task queue: Huey on SQLite, with workers woken the moment a run is enqueued.

SQLite cannot block on a queue, so Huey's stock consumer polls it and sleeps between empty polls.
In the embedded deployment the web threads that enqueue runs and the workers that execute them
live in one process (`manage.py serve`), so an enqueue can simply wake the waiting workers: the
storage here reports itself as blocking, and `dequeue()` waits on a condition variable that
`enqueue()` notifies, checking the table again every POLL_SECONDS for tasks written by other
processes (a separate `run_huey`, the shell). A new run starts without a polling delay; an
idle worker costs one cheap indexed SELECT per POLL_SECONDS, as it did with the polling backoff.

Both storages' `dequeue()` is where a worker says it is alive (automation/core/heartbeats.py): a
worker thread calls it at least once a second while idle, and between tasks.

Both storages (this one and the Redis one) also hold the organizations' run queues
(automation/runs/fair_queue.py): Huey's queue carries only wake-ups, and `take_queued` lets a worker
take the wake-ups its batch made surplus off the queue at once.
"""

import threading
import time
from collections.abc import Callable

import redis
from huey import RedisHuey, SqliteHuey
from huey.storage import RedisStorage, SqliteStorage

from automation.core import heartbeats
from automation.runs.fair_queue import (
    SQLITE_DDL,
    MemoryFairQueues,
    RedisFairQueues,
    SqliteFairQueues,
)

# How often an idle worker looks at the table for tasks that other processes enqueued.
POLL_SECONDS = 0.05
# How long one dequeue() waits before returning None, so the worker's loop can see a stop.
READ_TIMEOUT_SECONDS = 1.0


class WakeableSqliteStorage(SqliteStorage):
    blocking = True  # the consumer's workers call dequeue() back to back, without sleeping
    ddl = [*SqliteStorage.ddl, *SQLITE_DDL]

    def __init__(self, *args, read_timeout=READ_TIMEOUT_SECONDS, poll=POLL_SECONDS, **kwargs):
        super().__init__(*args, **kwargs)
        self.read_timeout = read_timeout
        self.poll = poll
        self._enqueued = threading.Condition()
        self._generation = 0  # +1 per enqueue in this process; a waiter compares it
        self.fair = SqliteFairQueues(self)

    def flush_all(self):
        super().flush_all()
        self.fair.flush()

    def _create_connection(self):
        conn = super()._create_connection()
        # WAL without an fsync per commit, as the main database: an enqueue was ~1.5 ms of
        # every triggering write. A task lost with the last moments before a power cut loses
        # no run: its PENDING log is in the main database, and the sweeper enqueues it again.
        conn.execute("pragma synchronous=NORMAL")
        return conn

    def enqueue(self, data, priority=None):
        super().enqueue(data, priority)
        self.enqueued()

    def enqueued(self) -> None:
        """Wake the workers of this process waiting in dequeue(): a task was just written."""
        with self._enqueued:
            self._generation += 1
            self._enqueued.notify_all()

    def dequeue(self):
        heartbeats.beat(heartbeats.WORKER)
        deadline = time.monotonic() + self.read_timeout
        while True:
            # Read the generation before looking at the table: an enqueue that lands after the
            # look changes it, so the wait below cannot miss its notification.
            with self._enqueued:
                generation = self._generation
            data = super().dequeue()
            remaining = deadline - time.monotonic()
            if data is not None or remaining <= 0:
                return data
            with self._enqueued:
                if self._generation == generation:
                    self._enqueued.wait(min(self.poll, remaining))

    def take(self, accept: Callable[[bytes], object], limit: int) -> list:
        """Remove up to `limit` of the next queued tasks that `accept` takes (its non-None
        answers, in queue order); the others stay where they are."""
        # A look without the write lock first, as dequeue() does: usually nothing is queued.
        if not self.sql("select 1 from task where queue = ? limit 1", (self.name,), results=True):
            return []
        taken, ids = [], []
        with self.db(commit=True) as cursor:
            cursor.execute(
                "select id, data from task where queue = ? order by priority desc, id limit ?",
                (self.name, limit),
            )
            for task_id, data in cursor.fetchall():
                value = accept(data)
                if value is not None:
                    taken.append(value)
                    ids.append(task_id)
            if ids:
                marks = ",".join("?" * len(ids))
                cursor.execute(f"delete from task where id in ({marks})", ids)
        return taken


class WakeableSqliteHuey(SqliteHuey):
    storage_class = WakeableSqliteStorage


class FairRedisStorage(RedisStorage):
    """Huey's Redis storage, with the organizations' run queues beside its own."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fair = RedisFairQueues(self)

    def dequeue(self):
        heartbeats.beat(heartbeats.WORKER)
        return super().dequeue()

    def flush_all(self):
        super().flush_all()
        self.fair.flush()


class FairRedisHuey(RedisHuey):
    storage_class = FairRedisStorage


_memory_queues: dict[int, MemoryFairQueues] = {}


def fair_queues(huey):
    """The organizations' run queues kept with `huey`'s storage (in memory for a storage of
    another kind, such as Huey's memory storage)."""
    storage = huey.storage
    queues = getattr(storage, "fair", None)
    if queues is None:
        queues = _memory_queues.setdefault(id(storage), MemoryFairQueues(storage))
    return queues


def take_queued(huey, task, limit: int) -> list[tuple]:
    """The arguments of up to `limit` queued calls of `task`, taken off the queue: the worker
    takes the wake-ups its batch made surplus (automation/runs/worker.py).

    Other tasks met on the way stay queued, in their order. Taken calls are in this process's
    memory only: if it dies before executing them they are lost, as the task a worker is
    executing is; a run lost so stays PENDING in the database, and the sweeper enqueues it again.
    Queues of other kinds (Huey's memory queue in tests) give nothing.
    """
    if limit <= 0:
        return []
    name = huey._registry.task_to_string(task.task_class)

    def accept(data):
        try:
            message = huey.serializer.deserialize(data)
        except Exception:
            return None
        if message.name != name or message.eta is not None or message.kwargs:
            return None
        return tuple(message.args)

    storage = huey.storage
    if isinstance(storage, WakeableSqliteStorage):
        return storage.take(accept, limit)
    if isinstance(storage, RedisStorage):
        return _take_from_redis(storage, accept, limit)
    return []


def _take_from_redis(storage: RedisStorage, accept, limit: int) -> list[tuple]:
    # RedisHuey pushes on the left and pops on the right: RPOP with a count (Redis 6.2+) takes
    # the next `limit` at once, and what is not ours goes back on the right, in its order.
    try:
        found = storage.conn.rpop(storage.queue_key, limit) or []
    except redis.ResponseError:  # an older Redis: no batches, each run is its own task
        return []
    taken, others = [], []
    for data in found:
        value = accept(data)
        if value is None:
            others.append(data)
        else:
            taken.append(value)
    if others:
        storage.conn.rpush(storage.queue_key, *reversed(others))
    return taken
