"""Condition CPU per organization: the processor time one organization's condition evaluations
may use per minute (AUTOMATION_CONDITIONS_CPU_SECONDS_PER_MINUTE).

Why: AUTOMATION_CONDITIONS_BUDGET_SECONDS bounds one evaluation, not an organization whose writes
keep firing slow conditions (198 slow but legal REGEX leaves, each RE2 match about 0.5 s): its
runs kept every worker thread on a core, and in embedded mode the web threads of the same
process, serving other organizations, waited for a core (RE2 releases the GIL while it matches:
it is the cores, not the GIL, that are taken: bench/regex_gil.py). Another organization's
`updateProduct` p50 went from 16 to 54 ms on the 2-core bench machine (bench/noisy_tenant.py),
and to 19.5 ms against 18.8 with this budget.

How:
- An evaluation measures its own CPU with `cpu_clock` (time.thread_time: this thread only, so
  waiting for a core, a lock or the database server is not counted, nor another thread's work)
  and charges it to its organization's counter of the current minute (fixed one-minute windows,
  UTC, as budget.py's).
- Before each leaf it compares what the organization had spent when it started plus its own
  CPU so far with the budget; once spent, the leaves left fail closed (conditions.py) and the
  run ends SKIPPED naming the setting and when the minute ends.
- Charges are added up in this process and sent to the counter store (Redis when REDIS_URL is
  set, else this process's memory) once they reach FLUSH_SECONDS, one round trip that also
  returns the organization's total from every process. So an organization whose conditions are
  cheap costs one round trip per minute and process, and the budget can be exceeded by at most
  FLUSH_SECONDS plus one evaluation (itself bounded by AUTOMATION_CONDITIONS_BUDGET_SECONDS) per
  worker thread: a match is never interrupted.
- A store that does not answer counts nothing: the evaluations go on (a warning is logged),
  as budget.py's counters do.
"""

import datetime
import logging
import threading
import time
from dataclasses import dataclass

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

from automation.core.stores import StorePerUrl

logger = logging.getLogger("automation.conditions.cpu_budget")

SETTING = "AUTOMATION_CONDITIONS_CPU_SECONDS_PER_MINUTE"
WINDOW_SECONDS = 60
KEY_PREFIX = "automation:cpu:"
# CPU charged in this process before it is sent to the store (and the total read back).
FLUSH_SECONDS = 0.05
MICROSECONDS = 1_000_000

# The CPU clock evaluations read (tests replace it to give an evaluation a known cost).
cpu_clock = time.thread_time


def limit() -> float:
    """Seconds of condition CPU an organization may use per minute; 0 or less: no budget."""
    return settings.AUTOMATION_CONDITIONS_CPU_SECONDS_PER_MINUTE


def current_window() -> int:
    return int(time.time()) // WINDOW_SECONDS


def spent(organization_id: int) -> float:
    """Condition CPU seconds the organization has used this minute, as far as this process knows
    (every process's charges up to this process's last exchange with the store, and its own)."""
    window = current_window()
    with _lock:
        account = _accounts.get(organization_id)
        if account is not None and account.window == window:
            return account.known + account.pending
    _exchange(organization_id, window, 0.0)  # first use this minute: ask the store
    with _lock:
        account = _accounts.get(organization_id)
        return account.known + account.pending if account else 0.0


def charge(organization_id: int, seconds: float) -> None:
    """Add an evaluation's CPU to the organization's minute; sent once FLUSH_SECONDS are due."""
    window = current_window()
    with _lock:
        account = _account(organization_id, window)
        account.pending += max(seconds, 0.0)
        if account.pending < FLUSH_SECONDS:
            return
        amount, account.pending = account.pending, 0.0
    _exchange(organization_id, window, amount)


def refusal(window: int) -> str:
    """Why an organization's conditions are not evaluated in `window` (shown in the run)."""
    start = datetime.datetime.fromtimestamp(window * WINDOW_SECONDS, datetime.UTC)
    end = start + datetime.timedelta(seconds=WINDOW_SECONDS)
    return (
        f"this organization's conditions used their CPU budget of {limit():g} s in the minute "
        f"from {start:%H:%M} UTC ({SETTING}); it resets at {end:%H:%M:%S} UTC"
    )


def clear() -> None:
    """Forget every count (tests; an operator lifting a cut before the minute ends)."""
    with _lock:
        _accounts.clear()
    _store().clear()


# --- This process's view of each organization's minute ----------------------------------------


@dataclass
class _Account:
    window: int
    known: float = 0.0  # the organization's total in the store at the last exchange
    pending: float = 0.0  # charged in this process since, not sent yet


_accounts: dict[int, _Account] = {}
_lock = threading.Lock()
_pruned_window = 0


def _account(organization_id: int, window: int) -> _Account:
    """The organization's account of `window` (call with _lock held); older windows dropped."""
    global _pruned_window
    if window != _pruned_window:  # a new minute: what was not sent belongs to a past one
        for key in [key for key, value in _accounts.items() if value.window < window]:
            del _accounts[key]
        _pruned_window = window
    account = _accounts.get(organization_id)
    if account is None or account.window != window:
        account = _accounts[organization_id] = _Account(window)
    return account


def _exchange(organization_id: int, window: int, amount: float) -> None:
    """Send `amount` seconds to the store and keep the total it answers with."""
    key = f"{KEY_PREFIX}org:{organization_id}:{window}"
    try:
        # Kept a window past its end, so a clock a little behind another still finds it.
        total = _store().add(key, round(amount * MICROSECONDS), 2 * WINDOW_SECONDS)
    except Exception as exc:
        logger.warning("condition CPU not counted: the counter store failed (%s)", exc)
        total = None
    with _lock:
        account = _account(organization_id, window)
        if total is None:
            account.known += amount  # at least this process's own spending counts
        else:
            # Totals only grow within a window: an answer overtaken by a later one is older.
            account.known = max(account.known, total / MICROSECONDS)


# --- Where the counters live (as in budget.py, counting amounts) -------------------------------


class RedisCounters:
    """Totals shared by every process, in Redis: INCRBY and EXPIRE in one MULTI."""

    def __init__(self, url: str):
        # Short timeouts and one immediate retry, as budget.RedisCounters.
        self.client = redis.Redis.from_url(
            url, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 1)
        )

    def add(self, key: str, amount: int, ttl: int) -> int:
        pipe = self.client.pipeline(transaction=True)
        pipe.incrby(key, amount)
        pipe.expire(key, ttl)
        return pipe.execute()[0]

    def clear(self) -> None:
        keys = list(self.client.scan_iter(match=f"{KEY_PREFIX}*", count=1000))
        if keys:
            self.client.delete(*keys)


class MemoryCounters:
    """Totals of this process (embedded mode: one process runs the server and the workers)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.totals: dict[str, tuple[int, float]] = {}  # key -> (total, expires at, monotonic)
        self.next_prune = 0.0

    def add(self, key: str, amount: int, ttl: int) -> int:
        now = time.monotonic()
        with self.lock:
            if now >= self.next_prune:
                self.totals = {k: v for k, v in self.totals.items() if v[1] > now}
                self.next_prune = now + WINDOW_SECONDS
            total, expires = self.totals.get(key, (0, now))
            total = total + amount if expires > now else amount
            self.totals[key] = (total, now + ttl)
            return total

    def clear(self) -> None:
        with self.lock:
            self.totals = {}


_store = StorePerUrl(RedisCounters, MemoryCounters)
