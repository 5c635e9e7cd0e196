"""Password attempt counters, kept in Django's cache: one budget for every door that checks a
password (obtainToken, and the login pages through accounts/forms.py: /accounts/login/ and
/admin/login/).

They all count against the same counters, per username and per client address
(LOGIN_RATE_LIMIT): a guesser gains nothing by alternating between them. Each
counter's window starts at its first attempt (not at a clock-aligned boundary, which would let a
guesser spend the limit just before the boundary and again just after it). The cache is Redis in
distributed mode, so every server process shares the counters; in embedded mode (one process) the
local-memory cache is enough. Every attempt counts, successful or not, and the check happens
before the password is verified, so parallel guesses cannot slip past the limit. The client
address is REMOTE_ADDR: behind a reverse proxy, set it from the proxy's header there.
"""

import hashlib
import time

from django.conf import settings
from django.core.cache import cache


def _key(kind: str, value: str) -> str:
    digest = hashlib.sha256(value.encode()).hexdigest()[:32]
    return f"ratelimit:login:{kind}:{digest}"


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


def count_login_attempt(username: str, client_address: str) -> int | None:
    """Count this password attempt; the seconds to wait when the username or the address is
    over the limit (the attempt must then be refused unchecked), else None."""
    limit = settings.LOGIN_RATE_LIMIT
    attempts, window = int(limit["attempts"]), int(limit["window_seconds"])
    now = time.time()
    hits = [
        _hit(_key("user", username.strip().lower()), window, now),
        _hit(_key("addr", client_address or "unknown"), window, now),
    ]
    over = [started for count, started in hits if count > attempts]
    if not over:
        return None
    retry_after = max(started + window - now for started in over)
    return max(1, int(retry_after) + 1)
