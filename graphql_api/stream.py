"""An organization's run stream as subscribers get it: in cursor order, without gap or
duplicate, live or resumed from a cursor.

The engine journals every run and action event with its position (automation/live/journal.py):
per organization, in commit order, without gaps, and whoever sees position p can read every
position below it. Live messages carry their position, but two processes' messages (a server's
PENDING, a worker's RUNNING), or two worker threads', can arrive in either order, and a message
can be lost (a server cut off from Redis). So a process orders each organization's messages once
for all its subscriptions (`OrgStream`): it passes on the next expected position, drops what it
already passed on, and on a position past the next one reads the missing ones from the journal
(all committed, since a later one is) before passing it on. No timer, no polling: a late message
is replaced by the journal's copy the moment a later one shows it is missing.

A subscription with `after` (`events`) first joins its organization's stream (what arrives is
kept), then reads the journal's head, replays the journal from the cursor up to that head, and
goes on with what the stream passes on, dropping what the replay already gave: every event after
the cursor, each once, in order. An event after the head commits after the head was read, so it
is published, and reaches the stream, after the subscription joined it.
"""

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncGenerator

from asgiref.sync import sync_to_async

from automation.api import live, stream
from graphql_api.errors import CursorExpired, InvalidInput, NotFound
from graphql_api.fanout import LiveEvent, fanout

logger = logging.getLogger("graphql_api.stream")

STREAM_TYPES = (stream.LOG_MESSAGE, stream.ACTION_MESSAGE)


class _Gap:
    """Passed on instead of events the journal no longer has (older than its retention)."""

    def __init__(self, oldest: int):
        self.oldest = oldest


class OrgStream:
    """One organization's events in this event loop, passed on to its listeners in position
    order, each position once (see the module docstring)."""

    def __init__(self, organization_id: int):
        self.organization_id = organization_id
        self.listeners: dict[asyncio.Queue, frozenset] = {}
        self.next: int | None = None  # the next position to pass on; None before the first
        self.task: asyncio.Task | None = None
        self.exit: contextlib.AsyncExitStack | None = None

    def start_at(self, position: int) -> None:
        """Pass on from `position` at the latest (a subscription replayed up to before it)."""
        if self.next is None:
            self.next = position

    async def run(self, events) -> None:
        async for event in events:
            position = event.message.get("position")
            if position is None:  # from a process without the journal: unordered, as before
                self._dispatch(event)
                continue
            if self.next is not None:
                if position < self.next:
                    continue  # already passed on (from the journal)
                if position > self.next:
                    await self._fill(self.next, position - 1)
            self._dispatch(event)
            self.next = position + 1

    async def _fill(self, first: int, last: int) -> None:
        """Pass on positions first..last from the journal (they are committed)."""
        after = first - 1
        while after < last:
            try:
                messages = await _read(self.organization_id, after, last)
            except stream.Purged as purged:
                logger.warning(
                    "organization %s: events %s..%s are no longer kept",
                    self.organization_id,
                    after + 1,
                    last,
                )
                self._dispatch(_Gap(purged.oldest))
                return
            except Exception:
                logger.exception("could not read the journal; retrying")
                await asyncio.sleep(1)
                continue
            for message in messages:
                self._dispatch(LiveEvent(message))
            after = messages[-1]["position"]

    def _dispatch(self, event) -> None:
        kind = event.message.get("type") if isinstance(event, LiveEvent) else None
        for queue, types in self.listeners.items():
            if kind is None or kind in types:
                queue.put_nowait(event)


class _Streams:
    """The organizations' streams this event loop listens to."""

    def __init__(self):
        self.entries: dict[int, OrgStream] = {}
        self.lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def listen(self, organization_id: int, types: frozenset):
        queue: asyncio.Queue = asyncio.Queue()
        async with self.lock:
            entry = self.entries.get(organization_id)
            if entry is None:
                entry = OrgStream(organization_id)
                entry.exit = contextlib.AsyncExitStack()
                group = live.organization_group(organization_id)
                events = await entry.exit.enter_async_context(fanout().listen(STREAM_TYPES, group))
                entry.task = asyncio.get_running_loop().create_task(entry.run(events))
                self.entries[organization_id] = entry
            entry.listeners[queue] = types
        try:
            yield entry, queue
        finally:
            async with self.lock:
                entry.listeners.pop(queue, None)
                if not entry.listeners and self.entries.get(organization_id) is entry:
                    del self.entries[organization_id]
                    entry.task.cancel()
                    await asyncio.wait([entry.task])
                    await entry.exit.aclose()


_streams: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def streams() -> _Streams:
    loop = asyncio.get_running_loop()
    current = _streams.get(loop)
    if current is None:
        current = _streams[loop] = _Streams()
    return current


@sync_to_async
def _read(organization_id: int, after: int, upto: int) -> list[dict]:
    return stream.read(organization_id, after, upto)


@sync_to_async
def _bounds(organization_id: int) -> tuple[int, int]:
    """(oldest position one may resume after, head)."""
    return stream.oldest(organization_id), stream.head(organization_id)


def parse_after(cursor: str, organization_id: int) -> int:
    """The position of a subscription's `after` cursor: VALIDATION_ERROR when it is not a
    cursor, NOT_FOUND when it is another organization's."""
    try:
        cursor_organization, position = stream.decode(cursor)
    except stream.InvalidCursor:
        raise InvalidInput({"after": ["Not a stream cursor."]}) from None
    if cursor_organization != organization_id:
        raise NotFound("No such cursor in this organization's stream.")
    return position


async def events(
    organization_id: int, types: frozenset, after: int | None
) -> AsyncGenerator[LiveEvent, None]:
    """The organization's events of `types`: after position `after` (the journal's, then live
    ones), or live ones from now when None. CursorExpired when events wanted are gone."""
    async with streams().listen(organization_id, types) as (entry, queue):
        last = after
        if after is not None:
            oldest, head = await _bounds(organization_id)
            if after > head:
                raise InvalidInput({"after": ["This cursor is ahead of the stream."]})
            if after < oldest:
                raise CursorExpired(stream.encode(organization_id, oldest))
            entry.start_at(head + 1)
            while last < head:
                try:
                    messages = await _read(organization_id, last, head)
                except stream.Purged as purged:
                    raise CursorExpired(stream.encode(organization_id, purged.oldest)) from None
                for message in messages:
                    if message["type"] in types:
                        yield LiveEvent(message)
                last = messages[-1]["position"]
        while True:
            event = await queue.get()
            if isinstance(event, _Gap):
                raise CursorExpired(stream.encode(organization_id, event.oldest))
            position = event.message.get("position")
            if position is not None:
                if last is not None and position <= last:
                    continue  # the replay gave it
                last = position
            yield event
