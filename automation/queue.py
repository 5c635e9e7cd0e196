"""The embedded task queue: Huey on SQLite, with workers woken the moment a run is enqueued.

SQLite cannot block on a queue, so Huey's stock consumer polls it and sleeps between empty polls.
In the embedded deployment the web threads that enqueue runs and the workers that execute them
live in one process (`manage.py serve`), so an enqueue can simply wake the waiting workers: the
storage here reports itself as blocking, and `dequeue()` waits on a condition variable that
`enqueue()` notifies, checking the table again every POLL_SECONDS for tasks written by other
processes (a separate `run_huey`, the shell). A new run starts without a polling delay; an
idle worker costs one cheap indexed SELECT per POLL_SECONDS, as it did with the polling backoff.
"""

import threading
import time

from huey import SqliteHuey
from huey.storage import SqliteStorage

# How often an idle worker looks at the table for tasks that other processes enqueued.
POLL_SECONDS = 0.05
# How long one dequeue() waits before returning None, so the worker's loop can see a stop.
READ_TIMEOUT_SECONDS = 1.0


class WakeableSqliteStorage(SqliteStorage):
    blocking = True  # the consumer's workers call dequeue() back to back, without sleeping

    def __init__(self, *args, read_timeout=READ_TIMEOUT_SECONDS, poll=POLL_SECONDS, **kwargs):
        super().__init__(*args, **kwargs)
        self.read_timeout = read_timeout
        self.poll = poll
        self._enqueued = threading.Condition()
        self._generation = 0  # +1 per enqueue in this process; a waiter compares it

    def enqueue(self, data, priority=None):
        super().enqueue(data, priority)
        with self._enqueued:
            self._generation += 1
            self._enqueued.notify_all()

    def dequeue(self):
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


class WakeableSqliteHuey(SqliteHuey):
    storage_class = WakeableSqliteStorage
