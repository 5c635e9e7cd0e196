"""Attempt counters kept in Django's cache: password attempts, invitations and new organizations.

Password attempts: one budget for every door that checks a password (obtainToken, and the login
pages through accounts/forms.py: /accounts/login/ and /admin/login/), so a guesser gains nothing
by alternating between them. Each attempt is counted per (username, client address) and per
client address; only an attempt those let through counts against the username's ceiling, which
is much higher. Keyed on the username alone, five wrong passwords from anywhere locked the real
user out of every door; now a guesser spends their own address's budget, and only a guesser
spread over many addresses reaches the ceiling (which then stops them, and the user too).

The username is keyed as the doors resolve it (`login_username`: stripped and NFKC-normalized,
as Django's login form does), then case-folded: `ａｌｉｃｅ` and `𝐚𝐥𝐢𝐜𝐞` used to get fresh counters
while the login form signed them in as `alice`. Case-folding merges names that differ only in
case: Django's user form refuses to create such twins, and a shared budget costs a guesser more,
never less.

Each counter's window starts at its first attempt (not at a clock-aligned boundary, which would
let a guesser spend the limit just before the boundary and again just after it). The cache is
Redis in distributed mode, so every server process shares the counters; in embedded mode (one
process) the local-memory cache is enough. Every attempt counts, successful or not, and the check
happens before the password is verified, so parallel guesses cannot slip past the limit. The
client address is REMOTE_ADDR: behind a reverse proxy, set it from the proxy's header there.
"""

import hashlib
import time
import unicodedata

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import UsernameField
from django.core.cache import cache, caches
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache

from observability import metrics


def _key(kind: str, value: str) -> str:
    digest = hashlib.sha256(value.encode()).hexdigest()[:32]
    return f"ratelimit:{kind}:{digest}"


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


def _retry_after(over: list[float], window: int, now: float) -> int:
    """Whole seconds until the last of the windows that started at `over` ends (at least 1)."""
    return max(1, int(max(started + window - now for started in over)) + 1)


def count(kind: str, scope: str, limit: int, window: int) -> int | None:
    """Count one attempt of `kind` by `scope` (a user id, an organization id); the seconds to
    wait when it is over `limit` in its window (the attempt must then be refused), else None."""
    now = time.time()
    attempts, started = _hit(_key(kind, scope), window, now)
    return _retry_after([started], window, now) if attempts > limit else None


def login_username(username: str) -> str:
    """The username as the login form resolves it: stripped, and NFKC-normalized unless it is
    too long to be anybody's (Django's UsernameField; normalizing a huge text is slow)."""
    max_length = get_user_model()._meta.get_field(get_user_model().USERNAME_FIELD).max_length
    return UsernameField(max_length=max_length).to_python(username or "")


def username_key(username: str) -> str:
    """The counters' name for a username: every spelling that resolves to one user (width,
    font variants, case) gives the same name."""
    resolved = login_username(username)
    # NFKC again after casefold(), which can produce text that is not NFKC (Unicode's
    # compatibility caseless matching).
    return unicodedata.normalize("NFKC", resolved.casefold())


def count_login_attempt(username: str, client_address: str) -> int | None:
    """Count this password attempt; the seconds to wait when it is over a limit (the attempt
    must then be refused unchecked), else None.

    The address and (username, address) counters are checked first; an attempt they refuse is
    not counted against the username's ceiling, so one address, however busy, cannot lock a user
    out from their own address.
    """
    window = settings.LOGIN_ATTEMPTS_WINDOW_SECONDS
    now = time.time()
    name = username_key(username)
    address = client_address or "unknown"
    by_address = _key("login:addr", address)
    by_name_here = _key("login:user-addr", f"{address}\n{name}")
    attempts, started = _hit(by_address, window, now)
    if attempts > settings.LOGIN_ATTEMPTS_PER_ADDRESS:
        metrics.refused("LOGIN_ATTEMPTS_PER_ADDRESS")
        # Refused without counting further: an address over its limit makes no new keys,
        # however many usernames it tries. Its pair counter may hold the caller back longer.
        over = [
            started,
            *_over_since(by_name_here, settings.LOGIN_ATTEMPTS_PER_USERNAME_AND_ADDRESS),
        ]
        return _retry_after(over, window, now)
    for key, limit, setting in [
        (
            by_name_here,
            settings.LOGIN_ATTEMPTS_PER_USERNAME_AND_ADDRESS,
            "LOGIN_ATTEMPTS_PER_USERNAME_AND_ADDRESS",
        ),
        (
            _key("login:user", name),
            settings.LOGIN_ATTEMPTS_PER_USERNAME,
            "LOGIN_ATTEMPTS_PER_USERNAME",
        ),
    ]:
        attempts, started = _hit(key, window, now)
        if attempts > limit:
            metrics.refused(setting)
            return _retry_after([started], window, now)
    return None


def _over_since(key: str, limit: int) -> list[float]:
    """[when its window started] if the counter `key` would refuse its next attempt, else [];
    counts nothing."""
    attempts = cache.get(key) or 0
    started = cache.get(f"{key}:start")
    return [started] if attempts >= limit and started is not None else []


def clear() -> None:
    """Forget every counter kept here, and the dry-run slots (tests: user and organization ids
    repeat between test runs while Redis keeps the counters; an operator lifting a limit early)."""
    backend = caches["default"]
    prefix = backend.make_key("ratelimit:")
    if isinstance(backend, RedisCache):
        client = backend._cache.get_client(write=True)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    elif isinstance(backend, LocMemCache):
        with backend._lock:
            for key in [key for key in backend._cache if key.startswith(prefix)]:
                backend._delete(key)
    else:
        backend.clear()
