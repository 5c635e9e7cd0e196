"""Keyset pagination of logs: newest first, (created_at, id) descending.

A cursor encodes the (created_at, id) of the last row seen, so the next page starts strictly
after it whatever was inserted meanwhile (new logs are newer and land before the first page, not
between pages): no duplicates and no gaps, unlike offsets. Cursors are opaque to clients.

A page is a bounded index range at any depth and table size (automation/core/keyset.py), and
`totalCount` is counted only when selected, up to TOTAL_COUNT_CAP: past it the answer is the cap
with `totalCountExact: false` ("at least"). An uncapped count cost 0.5 s at a million logs, on
every page, selected or not.
"""

import base64
import binascii
import datetime

from automation.api import keyset, stream
from graphql_api.errors import InvalidInput
from graphql_api.log_types import LogConnection, LogEdge, PageInfo

# `totalCount` counts this many logs at most (about 2 ms of index on PostgreSQL).
TOTAL_COUNT_CAP = 10_000


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


class BoundedCount:
    """The logs of a page's filter, counted on first use, up to TOTAL_COUNT_CAP."""

    def __init__(self, parts):
        self.parts = parts
        self._counted = None

    def counted(self) -> int:
        if self._counted is None:
            self._counted = keyset.count(self.parts, TOTAL_COUNT_CAP)
        return self._counted

    @property
    def value(self) -> int:
        return min(self.counted(), TOTAL_COUNT_CAP)

    @property
    def exact(self) -> bool:
        return self.counted() <= TOTAL_COUNT_CAP


def log_page(
    queryset,
    by: dict[str, list],
    first: int,
    after: str | None,
    *,
    stream_cursor: str | None = None,
    stream_positions: bool = False,
) -> LogConnection:
    """One page of `queryset` narrowed by `by` ({field: values}; see keyset.split) after the
    cursor; with `stream_positions`, each log's latest stream position read in one query (its
    `cursor`)."""
    rows = keyset.page(queryset, by, first + 1, decode_cursor(after) if after else None)
    has_next = len(rows) > first
    rows = rows[:first]
    if stream_positions:
        stream.set_positions(rows)
    edges = [LogEdge(cursor=encode_cursor(row), node=row) for row in rows]
    return LogConnection(
        edges=edges,
        page_info=PageInfo(has_next_page=has_next, end_cursor=edges[-1].cursor if edges else None),
        stream_cursor=stream_cursor,
        count=BoundedCount(keyset.split(queryset, by)),
    )
