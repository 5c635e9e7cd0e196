"""Fixed-window attempt counters for obtainToken, kept in Django's cache.

The cache is Redis in distributed mode, so every server process shares the counters; in embedded
mode (one process) the local-memory cache is enough. Every attempt counts, successful or not, and
the check happens before the password is verified, so parallel guesses cannot slip past the limit.
The client address is REMOTE_ADDR: behind a reverse proxy, set it from the proxy's header there.
"""

import hashlib
import time

from django.conf import settings
from django.core.cache import cache

from graphql_api.errors import RateLimited


def _key(kind: str, value: str, window: int, now: float) -> str:
    digest = hashlib.sha256(value.encode()).hexdigest()[:32]
    return f"ratelimit:obtain_token:{kind}:{digest}:{int(now // window)}"


def _hit(key: str, window: int) -> int:
    # add() is a no-op when the key exists; incr() is atomic in Redis and in locmem.
    cache.add(key, 0, timeout=window + 1)
    try:
        return cache.incr(key)
    except ValueError:  # expired between add() and incr()
        cache.add(key, 1, timeout=window + 1)
        return 1


def check_obtain_token(username: str, client_address: str) -> None:
    """Count this attempt; raise RATE_LIMITED when the username or the address is over the limit."""
    limit = settings.OBTAIN_TOKEN_RATE_LIMIT
    attempts, window = int(limit["attempts"]), int(limit["window_seconds"])
    now = time.time()
    counts = [
        _hit(_key("user", username.strip().lower(), window, now), window),
        _hit(_key("addr", client_address or "unknown", window, now), window),
    ]
    if max(counts) > attempts:
        raise RateLimited(retry_after=max(1, int(window - now % window) + 1))
