"""Who is on a WebSocket connection, and whether they may still see an organization's events.

Credentials (contract, AUTHENTICATION): the connection_init payload {"Authorization": "Bearer
<token>"}, or else the session cookie (GraphiQL in a logged-in browser sends no payload). A payload
that names a token which does not authenticate is refused even when a session cookie is present:
a client must learn that its token is bad.

A subscription lives for hours, so access is not decided once: `ConnectionAccess.role_in()` reads
the user's memberships again when the last read is older than MEMBERSHIP_RECHECK_SECONDS (one
query per user and credential per second at most, whatever the number of connections,
subscriptions or messages; a connection's first check takes a read that started after it
opened). The same read also re-checks a token connection's token, so a revoked token or a
deactivated user stops the stream too.
"""

import asyncio
import logging
import time

from channels.db import database_sync_to_async

from accounts.middleware import bearer_token
from accounts.models import ApiToken, Membership, hash_token

logger = logging.getLogger("graphql_api.live_auth")

MEMBERSHIP_RECHECK_SECONDS = 1.0
# Shared by the connections of this process: the latest read per (user id, token hash), and the
# read in progress per (event loop, user id, token hash), each with the time it started.
_recent_reads: dict[tuple, tuple[float, dict[int, str]]] = {}
_reads_in_flight: dict[tuple, tuple[float, asyncio.Task]] = {}


class ConnectionAccess:
    """The authenticated user of one connection and their (briefly cached) memberships."""

    def __init__(self, user, token_hash: str | None = None):
        self.user = user
        self.token_hash = token_hash
        self._opened_at = time.monotonic()
        self._roles: dict[int, str] = {}
        self._read_at: float | None = None
        self._lock = asyncio.Lock()

    async def role_in(self, organization_id: int) -> str | None:
        """The user's role in the organization now (at most MEMBERSHIP_RECHECK_SECONDS old).

        A connection's first check takes a read that started after the connection opened; later
        ones, a read less than MEMBERSHIP_RECHECK_SECONDS old. Connections of the same user and
        credential in this process share those reads: 500 connections of one user would
        otherwise queue 500 reads on Channels' one sync thread for every event (bench 6), and
        500 reconnecting clients 500 first reads.
        """
        async with self._lock:
            now = time.monotonic()
            if self._read_at is None:
                self._read_at, self._roles = await self._shared_read(since=self._opened_at)
            elif now - self._read_at >= MEMBERSHIP_RECHECK_SECONDS:
                since = now - MEMBERSHIP_RECHECK_SECONDS
                self._read_at, self._roles = await self._shared_read(since=since)
        return self._roles.get(int(organization_id))

    @property
    def _key(self):
        return (self.user.pk, self.token_hash)

    async def _shared_read(self, since: float) -> tuple[float, dict[int, str]]:
        """A read of this user's memberships that started at `since` or later (its start time,
        its roles), joining one in progress or starting one."""
        recent = _recent_reads.get(self._key)
        if recent is not None and recent[0] >= since:
            return recent
        loop = asyncio.get_running_loop()
        flight_key = (id(loop), self._key)
        flight = _reads_in_flight.get(flight_key)
        if flight is None or flight[0] < since:
            started = time.monotonic()
            task = loop.create_task(self._read_and_share(started))
            flight = _reads_in_flight[flight_key] = (started, task)
            task.add_done_callback(lambda _: _forget_flight(flight_key, flight))
        roles = await asyncio.shield(flight[1])
        return flight[0], roles

    async def _read_and_share(self, started: float) -> dict[int, str]:
        roles = await database_sync_to_async(self._read_roles)()
        recent = _recent_reads.get(self._key)
        if recent is None or recent[0] <= started:
            _recent_reads[self._key] = (started, roles)
        return roles

    def _read_roles(self) -> dict[int, str]:
        if self.token_hash is not None:
            still_valid = (
                ApiToken.objects.active()
                .filter(token_hash=self.token_hash, user_id=self.user.pk, user__is_active=True)
                .exists()
            )
            if not still_valid:
                return {}
        memberships = Membership.objects.filter(user_id=self.user.pk, user__is_active=True)
        return dict(memberships.values_list("organization_id", "role"))


def _forget_flight(flight_key, flight) -> None:
    # Only if no newer read has taken its place meanwhile.
    if _reads_in_flight.get(flight_key) is flight:
        del _reads_in_flight[flight_key]


async def authenticate(connection_params, scope) -> ConnectionAccess | None:
    """The connection's access from the connection_init payload or the session; None = refuse."""
    params = connection_params if isinstance(connection_params, dict) else {}
    header = params.get("Authorization", params.get("authorization"))
    if header is not None:
        raw = bearer_token(header) if isinstance(header, str) else None
        if raw is None:
            return None
        user = await database_sync_to_async(ApiToken.authenticate)(raw)
        return ConnectionAccess(user, hash_token(raw)) if user is not None else None
    user = scope.get("user")
    if user is not None and user.is_authenticated and user.is_active:
        return ConnectionAccess(user)
    return None
