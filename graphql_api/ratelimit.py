"""Rate limits kept in Django's cache: attempt counters for obtainToken, and slots for dry runs.

Each counter's window starts at its first attempt (not at a clock-aligned boundary, which would
let a guesser spend the limit just before the boundary and again just after it). The cache is
Redis in distributed mode, so every server process shares the counters; in embedded mode (one
process) the local-memory cache is enough. Every attempt counts, successful or not, and the check
happens before the password is verified, so parallel guesses cannot slip past the limit. The
client address is REMOTE_ADDR: behind a reverse proxy, set it from the proxy's header there.

A dry run (runRule(dryRun: true)) is executed inside its HTTP request, on one of the server's
request threads, for up to AUTOMATION_DRY_RUN_BUDGET_SECONDS: an organization may have
AUTOMATION_DRY_RUNS_PER_ORGANIZATION of them at once (eight at once used to take every request
thread of a server, failing other organizations' requests). See `dry_run_slot`.
"""

import contextlib
import hashlib
import math
import time
import uuid

from django.conf import settings
from django.core.cache import cache

from graphql_api.errors import RateLimited


def _key(kind: str, value: str) -> str:
    digest = hashlib.sha256(value.encode()).hexdigest()[:32]
    return f"ratelimit:obtain_token:{kind}:{digest}"


def _hit(key: str, window: int, now: float) -> tuple[int, float]:
    """Count one attempt; return the count and when this counter's window started."""
    # add() is a no-op when the key exists; incr() is atomic in Redis and in locmem and keeps the
    # key's expiry, so the window stays anchored at the first attempt.
    cache.add(f"{key}:start", now, timeout=window)
    cache.add(key, 0, timeout=window)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add() and incr(): this attempt opens a new window
        cache.add(key, 1, timeout=window)
        count = 1
    return count, cache.get(f"{key}:start", now)


def check_obtain_token(username: str, client_address: str) -> None:
    """Count this attempt; raise RATE_LIMITED when the username or the address is over the limit."""
    limit = settings.OBTAIN_TOKEN_RATE_LIMIT
    attempts, window = int(limit["attempts"]), int(limit["window_seconds"])
    now = time.time()
    hits = [
        _hit(_key("user", username.strip().lower()), window, now),
        _hit(_key("addr", client_address or "unknown"), window, now),
    ]
    over = [started for count, started in hits if count > attempts]
    if over:
        retry_after = max(started + window - now for started in over)
        raise RateLimited(retry_after=max(1, int(retry_after) + 1))


# --- Dry runs at once ----------------------------------------------------------------------------

# A slot is kept this long past the dry run's budget at most: a process that died during a dry
# run never gives its slot back, and the slot frees itself then.
DRY_RUN_SLOT_MARGIN_SECONDS = 30


def _dry_run_slot_key(organization_id, index: int) -> str:
    return f"ratelimit:dry_run:{organization_id}:{index}"


@contextlib.contextmanager
def dry_run_slot(organization_id):
    """Hold one of the organization's dry-run slots while the block runs; RATE_LIMITED (retry
    after the dry-run budget) when every slot is taken.

    Each slot is a cache key taken with add(), atomic in Redis and in locmem, so the slots are
    shared by every server process in distributed mode. It is given back when the block ends,
    however it ends, and expires on its own after the budget and a margin (a killed process).
    """
    budget = settings.AUTOMATION_DRY_RUN_BUDGET_SECONDS
    expiry = max(1, math.ceil(budget + DRY_RUN_SLOT_MARGIN_SECONDS))
    token = uuid.uuid4().hex
    for index in range(settings.AUTOMATION_DRY_RUNS_PER_ORGANIZATION):
        key = _dry_run_slot_key(organization_id, index)
        if cache.add(key, token, timeout=expiry):
            break
    else:
        limit = settings.AUTOMATION_DRY_RUNS_PER_ORGANIZATION
        raise RateLimited(
            retry_after=max(1, math.ceil(budget)),
            message=(
                f"This organization already has {limit} dry runs in progress "
                "(AUTOMATION_DRY_RUNS_PER_ORGANIZATION). Try again when one has finished."
            ),
        )
    try:
        yield
    finally:
        # Only our own token: a slot that expired and was taken by another dry run stays theirs.
        if cache.get(key) == token:
            cache.delete(key)
