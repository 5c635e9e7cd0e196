"""Heartbeats: workers and schedulers say they are alive, and /healthz and /metrics read it.

A worker beats from its queue polling (runs/queue.py: each worker thread polls at least once a
second while idle, and between tasks), a scheduler when its consumer starts and at every tick
(tasks.py); each process writes its row at most every AUTOMATION_WORKER_HEARTBEAT_SECONDS, so the
cost is one small UPDATE per process and interval, never one per run. A worker busy with one long
run does not poll meanwhile: a process with a single thread goes quiet for that run's length.

The rows live in the database, which both modes share between processes (the embedded mode's
cache is per process).
"""

import datetime
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, connection
from django.utils import timezone

logger = logging.getLogger("automation.core.heartbeats")

# The kinds of heartbeat (Heartbeat.kind). This module is imported with the queue, before
# Django's models are ready: it reads the model inside its functions.
WORKER, SCHEDULER = "worker", "scheduler"
# Rows of processes not seen for this long are deleted when a process writes its first beat.
FORGET_AFTER = datetime.timedelta(days=7)

_lock = threading.Lock()
_last_beat: dict[str, float] = {}
_started_at: dict[str, datetime.datetime] = {}


def process_name() -> str:
    """This process as heartbeats name it: host:pid (read each time: a fork changes the pid)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def beat(kind: str, *, now_required: bool = False) -> None:
    """Record that this process's `kind` is alive, unless it did less than an interval ago
    (`now_required`: whatever the interval). Never raises: a heartbeat that cannot be written
    is logged, and health will show the process as unseen."""
    moment = time.time()  # the wall clock: tests move it; a step back writes at once
    with _lock:
        last = _last_beat.get(kind)
        interval = settings.AUTOMATION_WORKER_HEARTBEAT_SECONDS
        if not now_required and last is not None and 0 <= moment - last < interval:
            return
        _last_beat[kind] = moment
    try:
        _write(kind)
    except Exception as exc:
        logger.warning("%s heartbeat not written: %s", kind, exc)
    finally:
        if not connection.in_atomic_block:
            connection.close()  # a worker thread's connection goes back to the pool


def _write(kind: str) -> None:
    from automation.core.system_models import Heartbeat

    now = timezone.now()
    process = process_name()
    if Heartbeat.objects.filter(kind=kind, process=process).update(seen_at=now):
        return
    started = _started_at.setdefault(f"{kind}:{process}", now)
    try:
        Heartbeat.objects.create(kind=kind, process=process, started_at=started, seen_at=now)
    except IntegrityError:  # another thread of this process wrote it first
        return
    Heartbeat.objects.filter(seen_at__lt=now - FORGET_AFTER).delete()


@dataclass(frozen=True)
class Seen:
    """What the heartbeats of one kind say: processes seen within the window, the latest beat."""

    recent: int
    last_seen_at: datetime.datetime | None

    def seconds_ago(self, now) -> float | None:
        if self.last_seen_at is None:
            return None
        return max(0.0, (now - self.last_seen_at).total_seconds())


def seen(kind: str, within_seconds: float, now=None) -> Seen:
    """Two indexed reads of a table with a row per process (heartbeat_kind_seen_idx)."""
    from automation.core.system_models import Heartbeat

    now = now or timezone.now()
    rows = Heartbeat.objects.filter(kind=kind)
    recent = rows.filter(seen_at__gte=now - datetime.timedelta(seconds=within_seconds)).count()
    last = rows.order_by("-seen_at").values_list("seen_at", flat=True).first()
    return Seen(recent=recent, last_seen_at=last)


def forget_local() -> None:
    """Forget when this process last wrote (tests: the next beat writes at once)."""
    with _lock:
        _last_beat.clear()
        _started_at.clear()
