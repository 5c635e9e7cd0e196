"""Rate limits as the API's RATE_LIMITED error: obtainToken's password attempts (the counters in
accounts/ratelimit.py, which the login pages share), invitations and new organizations per hour
and per day, retries per minute, slots for dry runs, and leases for a user's costly operations
(see `take_expensive_query_lease`).

A dry run (runRule(dryRun: true)) is executed inside its HTTP request, on one of the server's
request threads, for up to AUTOMATION_DRY_RUN_BUDGET_SECONDS: an organization may have
AUTOMATION_DRY_RUNS_PER_ORGANIZATION of them at once (eight at once used to take every request
thread of a server, failing other organizations' requests). See `dry_run_slot`. runSchedule on
a rule with a model evaluates the records it fans out to inside its request too, and takes the
same slots and budget.
"""

import contextlib
import math
import uuid

from django.conf import settings
from django.core.cache import cache

from accounts.ratelimit import count, count_login_attempt
from graphql_api.errors import RateLimited
from observability import metrics


def check_obtain_token(username: str, client_address: str) -> None:
    """Count this attempt; raise RATE_LIMITED when the username or the address is over the limit."""
    retry_after = count_login_attempt(username, client_address)
    if retry_after is not None:
        raise RateLimited(retry_after=retry_after)


HOUR, DAY = 3600, 24 * 3600


def check_add_member(inviter_id, organization_id) -> None:
    """Count one invitation by this inviter and by this organization; RATE_LIMITED when either
    is over its hourly limit. Counted before the username is looked at, so the answer is the
    same whoever is invited (31 organizations of one user once invited a user in 5 seconds)."""
    for kind, scope, setting, what in [
        (
            "invite:inviter",
            inviter_id,
            "ACCOUNTS_INVITATIONS_PER_INVITER_PER_HOUR",
            "You have sent {limit} invitations this hour "
            "(ACCOUNTS_INVITATIONS_PER_INVITER_PER_HOUR).",
        ),
        (
            "invite:org",
            organization_id,
            "ACCOUNTS_INVITATIONS_PER_ORGANIZATION_PER_HOUR",
            "This organization has sent {limit} invitations this hour "
            "(ACCOUNTS_INVITATIONS_PER_ORGANIZATION_PER_HOUR).",
        ),
    ]:
        limit = getattr(settings, setting)
        retry_after = count(kind, str(scope), limit, HOUR)
        if retry_after is not None:
            metrics.refused(setting)
            raise RateLimited(retry_after, what.format(limit=limit) + " Try again later.")


def check_create_organization(user_id) -> None:
    """Count one new organization of this user; RATE_LIMITED when over the daily limit (each is
    another place to invite from and to store rules in)."""
    limit = settings.ACCOUNTS_ORGANIZATIONS_PER_USER_PER_DAY
    retry_after = count("create-org:user", str(user_id), limit, DAY)
    if retry_after is not None:
        metrics.refused("ACCOUNTS_ORGANIZATIONS_PER_USER_PER_DAY")
        raise RateLimited(
            retry_after,
            f"You have created {limit} organizations in the last 24 hours "
            "(ACCOUNTS_ORGANIZATIONS_PER_USER_PER_DAY). Try again later.",
        )


# --- Dry runs at once ----------------------------------------------------------------------------

# A slot is kept this long past the dry run's budget at most: a process that died during a dry
# run never gives its slot back, and the slot frees itself then.
DRY_RUN_SLOT_MARGIN_SECONDS = 30


@contextlib.contextmanager
def dry_run_slot(organization_id, user_id):
    """Hold one of the organization's and one of the user's dry-run slots while the block runs;
    RATE_LIMITED (retry after the dry-run budget) when either has none left.

    Per organization alone was not enough: anyone may create organizations, so one user could
    hold every request thread through a few organizations of their own; users are created by
    operators only, so a cap per user closes that.
    """
    with (
        _slot(
            f"org:{organization_id}",
            "AUTOMATION_DRY_RUNS_PER_ORGANIZATION",
            "This organization already has {limit} runs being evaluated inside requests (dry "
            "runs and runSchedule fan-outs; AUTOMATION_DRY_RUNS_PER_ORGANIZATION).",
        ),
        _slot(
            f"user:{user_id}",
            "AUTOMATION_DRY_RUNS_PER_USER",
            "You already have {limit} runs being evaluated inside requests (dry runs and "
            "runSchedule fan-outs, in any organization; AUTOMATION_DRY_RUNS_PER_USER).",
        ),
    ):
        yield


@contextlib.contextmanager
def _slot(scope: str, setting: str, refusal: str):
    """Hold one of the slots of `scope` (as many as the setting `setting` says), or raise
    RATE_LIMITED with `refusal`.

    Each slot is a cache key taken with add(), atomic in Redis and in locmem, so the slots are
    shared by every server process in distributed mode. It is given back when the block ends,
    however it ends, and expires on its own after the budget and a margin (a killed process).
    """
    limit = getattr(settings, setting)
    budget = settings.AUTOMATION_DRY_RUN_BUDGET_SECONDS
    expiry = max(1, math.ceil(budget + DRY_RUN_SLOT_MARGIN_SECONDS))
    token = uuid.uuid4().hex
    for index in range(limit):
        key = f"ratelimit:dry_run:{scope}:{index}"
        if cache.add(key, token, timeout=expiry):
            break
    else:
        metrics.refused(setting)
        raise RateLimited(
            retry_after=max(1, math.ceil(budget)),
            message=refusal.format(limit=limit) + " Try again when one has finished.",
        )
    try:
        yield
    finally:
        # Only our own token: a slot that expired and was taken by another dry run stays theirs.
        if cache.get(key) == token:
            cache.delete(key)


def check_retry(user_id) -> None:
    """Count one retryRun of this user; RATE_LIMITED when over the per-minute limit (each retry
    is a new run in its original's tree: 3 retries once made 903 runs in 7 seconds)."""
    limit = settings.AUTOMATION_RETRIES_PER_USER_PER_MINUTE
    retry_after = count("retry:user", str(user_id), limit, 60)
    if retry_after is not None:
        metrics.refused("AUTOMATION_RETRIES_PER_USER_PER_MINUTE")
        raise RateLimited(
            retry_after,
            f"You have retried {limit} runs in the last minute "
            "(AUTOMATION_RETRIES_PER_USER_PER_MINUTE). Try again later.",
        )


# --- Expensive queries at once -------------------------------------------------------------------

# A lease outlives the longest query (the answer's byte limit stops it within seconds) and frees
# itself when a process dies before giving it back.
EXPENSIVE_QUERY_LEASE_SECONDS = 60
# What RATE_LIMITED says to wait: a costly query of a user usually ends within that.
EXPENSIVE_QUERY_RETRY_AFTER_SECONDS = 2


def take_expensive_query_lease(user_id) -> tuple[str, str]:
    """One of the user's GRAPHQL_EXPENSIVE_QUERIES_PER_USER leases: (key, token) to give back
    with `give_back_lease`; RATE_LIMITED when the user holds them all.

    Each bounded answer may still take the server a few seconds and megabytes; thirty at once of
    one user took 2.4 GB. A lease is a cache key taken with add() (atomic in Redis and locmem), so
    the count holds across every server process in distributed mode.
    """
    limit = settings.GRAPHQL_EXPENSIVE_QUERIES_PER_USER
    token = uuid.uuid4().hex
    for index in range(limit):
        key = f"ratelimit:expensive_query:user:{user_id}:{index}"
        if cache.add(key, token, timeout=EXPENSIVE_QUERY_LEASE_SECONDS):
            return key, token
    metrics.refused("GRAPHQL_EXPENSIVE_QUERIES_PER_USER")
    raise RateLimited(
        retry_after=EXPENSIVE_QUERY_RETRY_AFTER_SECONDS,
        message=(
            f"You already have {limit} costly queries running (cost at least "
            f"{settings.GRAPHQL_EXPENSIVE_QUERY_COST:,}; GRAPHQL_EXPENSIVE_QUERIES_PER_USER). "
            "Try again when one has finished, or ask for fewer items or fields."
        ),
    )


def give_back_lease(key: str, token: str) -> None:
    """Free a lease, unless it expired and someone else's query holds it now."""
    if cache.get(key) == token:
        cache.delete(key)
