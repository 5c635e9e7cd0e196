"""The run stream's journal: every run and action event, numbered per organization in commit
order, kept for AUTOMATION_STREAM_RETENTION_HOURS so a subscriber can resume from a cursor.

Writing. An event is published inside the transaction that changes a run's state
(automation/live/events.py) and sent after its commit. Just before that commit, the database
backend (config/db.py) hands this module every event the transaction published: the
organization's counter row (StreamHead) is bumped by their number, which locks it until the
commit, and the events are inserted with the positions it gave (one upsert and one bulk insert
per organization and transaction). The positions also go into the messages sent after the
commit, so a live event carries its cursor.

Because the counter row stays locked until the commit, a transaction that commits later gets
higher positions, and a rolled-back one gives its positions back: an organization's positions
have no gap and follow commit order, on SQLite (one writer at a time anyway) and on PostgreSQL
with concurrent writers. So whoever sees event p (after its commit) can read every event below p
from the journal. The counter is taken last in its transaction, when every other lock is held, so
it adds no lock cycle (no deadlock) and is held only for the insert and the commit.

A transaction committed without that backend hook (another ENGINE, or callbacks run by hand in
tests) journals its events right after its commit, in a transaction of their own, before sending
them: the same order, without the atomicity.

Cursors are opaque to clients: base64 of "s1:<organization>:<position>". Position 0 is the start
of an organization's stream.
"""

import base64
import binascii
import json
import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from automation.core.system_models import StreamEvent, StreamHead

logger = logging.getLogger("automation.live.journal")

LOG_MESSAGE = "automation.log"
ACTION_MESSAGE = "automation.action"
_KINDS = {LOG_MESSAGE: StreamEvent.LOG, ACTION_MESSAGE: StreamEvent.ACTION}
_TYPES = {kind: message_type for message_type, kind in _KINDS.items()}
# Written once with the run and never changed: read from the log when a subscriber asks.
_FROM_THE_LOG = ("context", "changes")
PAGE = 500


# --- Cursors -------------------------------------------------------------------------------------


class InvalidCursor(ValueError):
    """Not a cursor this server issued."""


def encode(organization_id: int, position: int) -> str:
    raw = f"s1:{int(organization_id)}:{int(position)}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> tuple[int, int]:
    """(organization id, position) of a cursor; InvalidCursor when it is not one."""
    if not isinstance(cursor, str) or not 0 < len(cursor) <= 64:
        raise InvalidCursor(cursor)
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        version, organization, position = raw.split(":")
        if version != "s1" or not (organization.isdigit() and position.isdigit()):
            raise ValueError(raw)
        return int(organization), int(position)
    except (ValueError, UnicodeError, binascii.Error):
        raise InvalidCursor(cursor) from None


# --- Writing -------------------------------------------------------------------------------------


class Events:
    """The stream events of one publication (an on-commit callback of events.py carries one):
    (organization id, message) pairs whose messages get their "position" here."""

    def __init__(self, pairs: list[tuple[int, dict]]):
        self.pairs = pairs

    def journaled(self) -> bool:
        return all("position" in message for _, message in self.pairs)


def before_commit(db, publications: list[Events]) -> None:
    """Journal the events the committing transaction published, in publication order, and
    number them (called by the backend right before COMMIT, inside the transaction)."""
    by_organization: dict[int, list[dict]] = {}
    for events in publications:
        for organization_id, message in events.pairs:
            if "position" not in message:
                by_organization.setdefault(organization_id, []).append(message)
    if by_organization:
        _write(db, by_organization)


def journal_now(events: Events) -> None:
    """Journal events whose transaction committed without the backend hook: in a transaction
    of their own, so they are still numbered in commit order."""
    if events.journaled():
        return
    with transaction.atomic():
        pending: dict[int, list[dict]] = {}
        for organization_id, message in events.pairs:
            if "position" not in message:
                pending.setdefault(organization_id, []).append(message)
        _write(transaction.get_connection(), pending)


# One PostgreSQL statement journals up to this many events (5 parameters each, of 65,535).
_ONE_STATEMENT = 10_000


def _write(db, by_organization: dict[int, list[dict]]) -> None:
    """Bump each organization's counter by its events' number and insert them with the
    positions it gave; the messages get their "position". In organization order: two
    transactions publishing for the same organizations lock their counters in the same order."""
    created = StreamEvent._meta.get_field("created_at").get_db_prep_save(timezone.now(), db)
    with db.cursor() as cursor:
        for organization_id in sorted(by_organization):
            messages = by_organization[organization_id]
            stored = [_stored(message) for message in messages]
            if db.vendor == "postgresql" and len(messages) <= _ONE_STATEMENT:
                head = _bump_and_insert(db, cursor, organization_id, stored, created)
            else:
                head = _bump(db, cursor, organization_id, len(messages))
                _insert(db, cursor, organization_id, head - len(messages) + 1, stored, created)
            for offset, message in enumerate(messages):
                message["position"] = head - len(messages) + 1 + offset


def _tables(db) -> tuple[str, str]:
    quote = db.ops.quote_name
    return quote(StreamHead._meta.db_table), quote(StreamEvent._meta.db_table)


def _bump_sql(db) -> str:
    head_table, _ = _tables(db)
    return (
        f"INSERT INTO {head_table} (organization_id, position) VALUES (%s, %s) "
        f"ON CONFLICT (organization_id) DO UPDATE SET position = {head_table}.position + "
        "excluded.position RETURNING position"
    )


def _bump(db, cursor, organization_id: int, count: int) -> int:
    """The organization's new head after `count` more events (its row locked till commit)."""
    cursor.execute(_bump_sql(db), [organization_id, count])
    return cursor.fetchone()[0]


def _insert(db, cursor, organization_id: int, first: int, stored: list, created) -> None:
    _, event_table = _tables(db)
    cursor.executemany(
        f"INSERT INTO {event_table} (organization_id, position, kind, log_id, rule_id, "
        "created_at, message) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        [
            (organization_id, first + offset, kind, log_id, rule_id, created, text)
            for offset, (kind, log_id, rule_id, text) in enumerate(stored)
        ],
    )


def _bump_and_insert(db, cursor, organization_id: int, stored: list, created) -> int:
    """_bump and _insert in one statement (one round trip): the new head."""
    _, event_table = _tables(db)
    rows = ", ".join(["(%s::bigint, %s, %s::bigint, %s::bigint, %s)"] * len(stored))
    cursor.execute(
        f"WITH head AS ({_bump_sql(db)}) "
        f"INSERT INTO {event_table} (organization_id, position, kind, log_id, rule_id, "
        "created_at, message) "
        "SELECT %s, head.position - %s + v.n, v.kind, v.log_id, v.rule_id, %s, v.message "
        f"FROM head, (VALUES {rows}) AS v (n, kind, log_id, rule_id, message) "
        "RETURNING position",
        [
            organization_id,
            len(stored),
            organization_id,
            len(stored),
            created,
            *(
                value
                for n, (kind, log_id, rule_id, text) in enumerate(stored, 1)
                for value in (n, kind, log_id, rule_id, text)
            ),
        ],
    )
    return max(row[0] for row in cursor.fetchall())


def _stored(message: dict) -> tuple[str, int, int, str]:
    """(kind, log id, rule id, JSON text) of a message as the journal keeps it."""
    kind = _KINDS[message["type"]]
    body = {key: value for key, value in message.items() if key not in ("type", "position")}
    if kind == StreamEvent.LOG:
        log = body["log"]
        body["log"] = {key: value for key, value in log.items() if key not in _FROM_THE_LOG}
        return kind, log["id"], log["rule"]["id"], _dumps(body)
    return kind, body["log_id"], body["rule_id"], _dumps(body)


def _dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"))


# --- Reading -------------------------------------------------------------------------------------


def head(organization_id: int) -> int:
    """The position of the organization's latest event (0 before its first)."""
    found = StreamHead.objects.filter(organization_id=organization_id).values_list(
        "position", flat=True
    )
    return found.first() or 0


def oldest(organization_id: int) -> int:
    """The oldest position a subscriber may resume after: the one before the oldest event still
    kept (retention deletes the oldest first), or the head when none is kept."""
    first = (
        StreamEvent.objects.filter(organization_id=organization_id)
        .order_by("position")
        .values_list("position", flat=True)
        .first()
    )
    return head(organization_id) if first is None else first - 1


class Purged(Exception):
    """Events wanted were deleted by retention; `oldest` is where the kept ones start."""

    def __init__(self, oldest: int):
        super().__init__(oldest)
        self.oldest = oldest


def read(organization_id: int, after: int, upto: int, limit: int = PAGE) -> list[dict]:
    """The messages of positions after..upto (at most `limit`), oldest first, as they were
    sent live (without a run's context and changes: its log has them).

    Every position up to `upto` must be committed (it is when `upto` was read from the head or
    seen in a live event); a missing one was purged (Purged).
    """
    end = min(upto, after + limit)
    if end <= after:
        return []
    rows = list(
        StreamEvent.objects.filter(
            organization_id=organization_id, position__gt=after, position__lte=end
        )
        .order_by("position")
        .values_list("position", "kind", "message")
    )
    if len(rows) != end - after:
        raise Purged(oldest(organization_id))
    messages = []
    for position, kind, text in rows:
        message = json.loads(text)
        message["type"] = _TYPES[kind]
        message["position"] = position
        messages.append(message)
    return messages


def log_positions(log_ids) -> dict[int, int]:
    """{log id: position of its latest event kept} (logs with no event kept are left out)."""
    from django.db.models import Max

    rows = (
        StreamEvent.objects.filter(log_id__in=list(log_ids))
        .values("log_id")
        .annotate(latest=Max("position"))
        .values_list("log_id", "latest")
    )
    return dict(rows)


def set_positions(logs) -> None:
    """Give each log its `stream_position`: its latest event's, or, for a run whose events are
    no longer kept (or that has none), its organization's oldest position (the run has no event
    after it, so it orders the same). One query, plus one per organization of such a run."""
    logs = list(logs)
    found = log_positions(log.pk for log in logs)
    oldest_of: dict[int, int] = {}
    for log in logs:
        position = found.get(log.pk)
        if position is None:
            if log.organization_id not in oldest_of:
                oldest_of[log.organization_id] = oldest(log.organization_id)
            position = oldest_of[log.organization_id]
        log.stream_position = position


def log_cursor(log) -> str:
    """The cursor of a run's latest event (see set_positions)."""
    if getattr(log, "stream_position", None) is None:
        set_positions([log])
    return encode(log.organization_id, log.stream_position)


# --- Retention -----------------------------------------------------------------------------------


def retention_cutoff(now):
    import datetime

    return now - datetime.timedelta(hours=settings.AUTOMATION_STREAM_RETENTION_HOURS)


def purge(now=None, *, dry_run: bool = False, batch_size: int = 5000) -> int:
    """Delete events older than AUTOMATION_STREAM_RETENTION_HOURS, oldest first per
    organization (so what is kept of a stream stays one unbroken run of positions); returns
    how many were (or would be) deleted.

    Per organization: its oldest position, then the first one recent enough to keep (a walk
    over the events to delete), then the positions between deleted in windows of
    `batch_size`, each a range of the primary key. A window is not looked for again: after a
    delete, PostgreSQL's index still holds the dead entries until a vacuum, and asking for the
    oldest position again each batch walked over every one of them."""
    cutoff = retention_cutoff(now or timezone.now())
    deleted = 0
    for organization_id in StreamHead.objects.values_list("organization_id", flat=True):
        events = StreamEvent.objects.filter(organization_id=organization_id)
        positions = events.order_by("position").values_list("position", flat=True)
        first = positions.first()
        if first is None:
            continue
        kept = positions.filter(created_at__gte=cutoff).first()
        end = (positions.order_by("-position").first() + 1) if kept is None else kept
        if dry_run:
            deleted += events.filter(position__lt=end).count()
            continue
        for start in range(first, end, batch_size):
            with transaction.atomic():
                count, _ = events.filter(
                    position__gte=start, position__lt=min(start + batch_size, end)
                ).delete()
            deleted += count
    if deleted and not dry_run:
        logger.info("retention: deleted %s stream events", deleted)
    return deleted


__all__ = [
    "ACTION_MESSAGE",
    "LOG_MESSAGE",
    "Events",
    "InvalidCursor",
    "Purged",
    "before_commit",
    "decode",
    "encode",
    "head",
    "journal_now",
    "log_cursor",
    "log_positions",
    "set_positions",
    "oldest",
    "read",
]
