"""Who is on a WebSocket connection, and whether they may still see an organization's events.

Credentials (contract, AUTHENTICATION): the connection_init payload {"Authorization": "Bearer
<token>"}, or else the session cookie (GraphiQL in a logged-in browser sends no payload). A payload
that names a token which does not authenticate, or an Authorization value that is not `Bearer
<token>`, is refused even when a session cookie is present: a client must learn that its token is
bad. A refusal says why (`Refused`): no credentials, a malformed value, an invalid or a revoked
token.

A subscription lives for hours, so access is not decided once: `ConnectionAccess.role_in()` reads
the user's memberships again when the last read is older than MEMBERSHIP_RECHECK_SECONDS (one
read per user and credential per second at most, whatever the number of connections,
subscriptions or messages; a connection's first check takes a read that started after it
opened). The same read re-checks the connection's credential: a token still active, or a session
that still exists and still belongs to this user with the same password (Django's session auth
hash). A revoked token, a logout, a password change or a deactivated user therefore ends the
stream with UNAUTHENTICATED; a lost membership alone, with NOT_FOUND.
"""

import asyncio
import logging
import time
from importlib import import_module

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.utils.crypto import constant_time_compare

from accounts.middleware import WRONG_SCHEME, parse_authorization
from accounts.models import ApiToken, Membership, hash_token
from graphql_api.errors import Unauthenticated

logger = logging.getLogger("graphql_api.live_auth")

MEMBERSHIP_RECHECK_SECONDS = 1.0
NO_CREDENTIALS = (
    'No credentials: send {"Authorization": "Bearer <token>"} in connection_init, or log in.'
)
SESSION_ENDED = "The session has ended (logged out, or the password changed)."
# Shared by the connections of this process: the latest read per (user id, credential), and the
# read in progress per (event loop, user id, credential), each with the time it started. A read
# is the user's {organization id: role}, or why the credential no longer authenticates.
_recent_reads: dict[tuple, tuple[float, dict[int, str] | str]] = {}
_reads_in_flight: dict[tuple, tuple[float, asyncio.Task]] = {}


class Refused(Exception):
    """A connection refused at connection_init; the message is the reason the client is told."""


class ConnectionAccess:
    """The authenticated user of one connection and their (briefly cached) memberships.

    The credential is a token (`token_hash`) or a session (`session_key`).
    """

    def __init__(self, user, token_hash: str | None = None, session_key: str | None = None):
        self.user = user
        self.token_hash = token_hash
        self.session_key = session_key
        self._opened_at = time.monotonic()
        self._roles: dict[int, str] | str = {}
        self._read_at: float | None = None
        self._lock = asyncio.Lock()

    async def role_in(self, organization_id: int) -> str | None:
        """The user's role in the organization now (at most MEMBERSHIP_RECHECK_SECONDS old);
        Unauthenticated once the connection's credential no longer authenticates.

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
        if isinstance(self._roles, str):
            raise Unauthenticated(self._roles)
        return self._roles.get(int(organization_id))

    @property
    def _key(self):
        return (self.user.pk, self.token_hash, self.session_key)

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

    def _read_roles(self) -> dict[int, str] | str:
        """{organization id: role}, or why the credential no longer authenticates."""
        refusal = self.credential_refusal()
        if refusal is not None:
            return refusal
        memberships = Membership.objects.filter(user_id=self.user.pk, user__is_active=True)
        return dict(memberships.values_list("organization_id", "role"))

    def credential_refusal(self) -> str | None:
        """Why the connection's credential no longer authenticates (revoked token, deactivated
        user, ended session), or None while it does. Reads the database: call it in a thread."""
        refusal = self._token_refusal() if self.token_hash is not None else None
        if refusal is None and self.session_key is not None:
            refusal = None if self._session_still_valid() else SESSION_ENDED
        return refusal

    def _token_refusal(self) -> str | None:
        state = (
            ApiToken.objects.filter(token_hash=self.token_hash, user_id=self.user.pk)
            .values_list("revoked_at", "user__is_active")
            .first()
        )
        if state is None:
            return "Invalid token."
        revoked_at, user_is_active = state
        if revoked_at is not None:
            return "Revoked token."
        return None if user_is_active else "The token's user is deactivated."

    def _session_still_valid(self) -> bool:
        """Does the session still exist and log this user in, with the password it was opened
        with? Read without changing it (Django's own check may flush or cycle the session)."""
        data = import_module(settings.SESSION_ENGINE).SessionStore(self.session_key).load()
        if str(data.get(SESSION_KEY)) != str(self.user.pk):
            return False
        user = get_user_model().objects.filter(pk=self.user.pk, is_active=True).first()
        if user is None:
            return False
        given = data.get(HASH_SESSION_KEY) or ""
        hashes = [user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()]
        return any(constant_time_compare(given, expected) for expected in hashes)


def _forget_flight(flight_key, flight) -> None:
    # Only if no newer read has taken its place meanwhile.
    if _reads_in_flight.get(flight_key) is flight:
        del _reads_in_flight[flight_key]


async def authenticate(connection_params, scope) -> ConnectionAccess:
    """The connection's access from the connection_init payload or the session.

    Raises Refused with the reason: no credentials, an Authorization value that is not `Bearer
    <token>`, or the token's refusal reason (invalid, revoked, user deactivated).
    """
    params = connection_params if isinstance(connection_params, dict) else {}
    header = params.get("Authorization", params.get("authorization"))
    if header is not None:
        raw, problem = parse_authorization(header) if isinstance(header, str) else (None, None)
        if raw is None:
            raise Refused(problem or WRONG_SCHEME)
        user = await database_sync_to_async(ApiToken.authenticate)(raw)
        if user is None:
            raise Refused(await database_sync_to_async(ApiToken.refusal_reason)(raw))
        return ConnectionAccess(user, token_hash=hash_token(raw))
    user = scope.get("user")
    if user is not None and user.is_authenticated and user.is_active:
        session = scope.get("session")
        return ConnectionAccess(user, session_key=getattr(session, "session_key", None))
    raise Refused(NO_CREDENTIALS)
