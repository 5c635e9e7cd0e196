"""Keyset pagination of logs: newest first, (created_at, id) descending.

A cursor encodes the (created_at, id) of the last row seen, so the next page starts strictly
after it whatever was inserted meanwhile (new logs are newer and land before the first page, not
between pages): no duplicates and no gaps, unlike offsets. Cursors are opaque to clients.
"""

import base64
import binascii
import datetime

from django.db.models import Q

from automation.api import stream
from graphql_api.errors import InvalidInput
from graphql_api.log_types import LogConnection, LogEdge, PageInfo


def encode_cursor(log) -> str:
    raw = f"{log.created_at.isoformat()}|{log.pk}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime.datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor.encode()).decode()
        created, _, pk = raw.partition("|")
        created_at = datetime.datetime.fromisoformat(created)
        if created_at.tzinfo is None:
            raise ValueError("naive")
        return created_at, int(pk)
    except (ValueError, UnicodeError, binascii.Error):
        raise InvalidInput({"after": ["Invalid cursor."]}) from None


def log_page(
    queryset,
    first: int,
    after: str | None,
    *,
    stream_cursor: str | None = None,
    stream_positions: bool = False,
) -> LogConnection:
    """One page of `queryset` (already filtered and scoped) after the cursor; with
    `stream_positions`, each log's latest stream position read in one query (its `cursor`)."""
    total = queryset.count()
    page = queryset.order_by("-created_at", "-id")
    if after:
        created_at, pk = decode_cursor(after)
        page = page.filter(Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=pk))
    rows = list(page[: first + 1])
    has_next = len(rows) > first
    rows = rows[:first]
    if stream_positions:
        stream.set_positions(rows)
    edges = [LogEdge(cursor=encode_cursor(row), node=row) for row in rows]
    return LogConnection(
        edges=edges,
        page_info=PageInfo(has_next_page=has_next, end_cursor=edges[-1].cursor if edges else None),
        total_count=total,
        stream_cursor=stream_cursor,
    )
