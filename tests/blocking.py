"""Holding a thread inside a rule's condition evaluation, to see what other threads can do then.

On SQLite one connection at a time may write (the settings open every transaction IMMEDIATE, so
a transaction holds the write lock from BEGIN): work done inside a transaction stops every other
writer of every organization until it commits. These helpers let a test park a run, a dry run or
a scheduler tick in the middle of its evaluation and check that another write commits meanwhile.
Use them in `django_db(transaction=True)` tests, whose threads share the file database.
"""

import threading
import time

from django.db import connection

from automation.conditions import evaluate as conditions

WAIT_SECONDS = 60  # a parked evaluation gives up after this, so a failing test cannot hang


class BlockedEvaluation:
    """Every condition leaf waits for `release` once `entered` is set (patched with monkeypatch)."""

    def __init__(self, monkeypatch):
        self.entered = threading.Event()
        self.release = threading.Event()
        self._parked = threading.Semaphore(0)
        evaluate_leaf = conditions._Evaluator._evaluate_leaf

        def parked(evaluator, leaf):
            self.entered.set()
            self._parked.release()
            self.release.wait(timeout=WAIT_SECONDS)
            return evaluate_leaf(evaluator, leaf)

        monkeypatch.setattr(conditions._Evaluator, "_evaluate_leaf", parked)

    def wait_for(self, count: int, timeout: float) -> bool:
        """Have `count` leaves (counted since the start) reached the block within `timeout`?"""
        deadline = time.monotonic() + timeout
        for _ in range(count):
            if not self._parked.acquire(timeout=max(0.0, deadline - time.monotonic())):
                return False
        return True


class Worker(threading.Thread):
    """Runs `target` on a database connection of its own; keeps its result or its exception."""

    def __init__(self, target):
        super().__init__(daemon=True)
        self.target_function = target
        self.result = None
        self.error: BaseException | None = None

    def run(self):
        try:
            self.result = self.target_function()
        except BaseException as exc:
            self.error = exc
        finally:
            connection.close()

    def finished_within(self, seconds: float) -> bool:
        self.join(timeout=seconds)
        return not self.is_alive()


def start(target) -> Worker:
    worker = Worker(target)
    worker.start()
    return worker
