"""The embedded queue (automation/queue.py): an enqueue wakes an idle worker at once."""

import threading
import time

import pytest

from automation.queue import WakeableSqliteHuey, WakeableSqliteStorage


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
