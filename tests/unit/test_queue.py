"""The task queues (automation/runs/queue.py): the embedded one wakes an idle worker at once; a worker\ntakes the queued calls of a task behind the one it was handed (batches of runs)."""

import os
import threading
import time
import uuid

import pytest
from huey import RedisHuey

from automation.runs.queue import WakeableSqliteHuey, WakeableSqliteStorage, take_queued


@pytest.fixture
def storage_file(tmp_path):
    return str(tmp_path / "queue.sqlite3")


def dequeue_in_thread(storage) -> tuple[threading.Thread, dict]:
    found = {}

    def work():
        started = time.monotonic()
        found["data"] = storage.dequeue()
        found["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=work)
    thread.start()
    return thread, found


def test_an_enqueue_in_this_process_wakes_a_waiting_worker_without_waiting_to_poll(storage_file):
    # The worker would look at the table again only after 30 s: the enqueue must wake it.
    storage = WakeableSqliteStorage("q", filename=storage_file, read_timeout=60, poll=30)
    thread, found = dequeue_in_thread(storage)
    time.sleep(0.3)  # the worker has looked at the empty table and is waiting
    assert thread.is_alive()
    storage.enqueue(b"task-1")
    thread.join(timeout=10)
    assert not thread.is_alive(), "the enqueue did not wake the worker"
    assert found["data"] == b"task-1"


def test_a_task_enqueued_by_another_process_is_seen_at_the_next_poll(storage_file):
    # A second storage on the same file stands for another process (its own condition variable).
    worker_side = WakeableSqliteStorage("q", filename=storage_file, read_timeout=60, poll=0.05)
    other_process = WakeableSqliteStorage("q", filename=storage_file)
    thread, found = dequeue_in_thread(worker_side)
    time.sleep(0.3)
    other_process.enqueue(b"from-elsewhere")
    thread.join(timeout=10)
    assert found["data"] == b"from-elsewhere"


def test_an_empty_queue_returns_none_after_the_read_timeout_so_a_worker_can_stop(storage_file):
    storage = WakeableSqliteStorage("q", filename=storage_file, read_timeout=0.2, poll=0.05)
    thread, found = dequeue_in_thread(storage)
    thread.join(timeout=10)
    assert found["data"] is None


def test_the_huey_class_uses_the_wakeable_storage_and_keeps_fifo(storage_file):
    huey = WakeableSqliteHuey("q", filename=storage_file)
    assert isinstance(huey.storage, WakeableSqliteStorage)
    assert huey.storage.blocking, "the consumer must not sleep between empty dequeues"
    huey.storage.enqueue(b"a")
    huey.storage.enqueue(b"b")
    assert [huey.storage.dequeue(), huey.storage.dequeue()] == [b"a", b"b"]


def test_the_embedded_queue_commits_without_an_fsync_each(storage_file):
    """WAL with synchronous=NORMAL, as the main database: an fsync per enqueue was ~1.5 ms of
    every triggering write (a lost task loses no run: the sweeper enqueues its PENDING log)."""
    storage = WakeableSqliteStorage("q", filename=storage_file)
    with storage.db() as cursor:
        assert cursor.execute("pragma synchronous").fetchone()[0] == 1  # NORMAL
        assert cursor.execute("pragma journal_mode").fetchone()[0] == "wal"


def queued_names(huey) -> list:
    return [(task.name, task.args) for task in iter(huey.dequeue, None)]


def check_take_queued(huey) -> None:
    @huey.task()
    def work(number):
        return number

    @huey.task()
    def other():
        return None

    work(1)
    other()
    work(2)
    work(3)
    # The next 3 queued: work(1), other(), work(2); only the calls of `work` are taken.
    assert take_queued(huey, work, 3) == [(1,), (2,)]
    assert queued_names(huey) == [("other", ()), ("work", (3,))], "the rest stays, in order"
    assert take_queued(huey, work, 3) == []


def test_a_worker_takes_the_queued_calls_of_its_task_and_leaves_the_others(storage_file):
    check_take_queued(WakeableSqliteHuey("q", filename=storage_file))


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs REDIS_URL")
def test_a_worker_takes_the_queued_calls_of_its_task_from_redis():
    huey = RedisHuey(f"take-{uuid.uuid4().hex}", url=os.environ["REDIS_URL"])
    try:
        check_take_queued(huey)
    finally:
        huey.storage.flush_queue()


def test_a_redis_without_rpop_count_gives_no_batch_instead_of_failing_the_run():
    """RPOP with a count needs Redis 6.2: on an older one each run stays its own task."""
    import redis
    from huey.storage import RedisStorage

    from automation.runs.queue import _take_from_redis

    class OldRedis:
        def rpop(self, key, count=None):
            raise redis.ResponseError("wrong number of arguments for 'rpop' command")

    storage = RedisStorage.__new__(RedisStorage)
    storage.conn, storage.queue_key = OldRedis(), "huey.redis.old"
    assert _take_from_redis(storage, lambda data: (data,), 10) == []
