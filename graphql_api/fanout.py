"""One channel-layer listener per group for all the subscriptions of a process.

Strawberry's `listen_to_channel` joins a group once per subscription, so with 500 subscribers of
one organization the layer handles every message 500 times: the in-memory layer deep-copies it
per channel (and scans all its channels on each of the 500 receives), channels-redis decodes it
per channel, and each subscription then builds its own model instance from it (bench 6).

Here a process (one event loop) joins each group once, on a channel of its own, and hands every
message it receives, wrapped once in a `LiveEvent`, to each local listener of that group and
message type. A `LiveEvent` is shared and must be treated as read-only; `LiveEvent.built` makes
a derived object (the model instance a subscription yields) once per event. Each subscription
still filters the events and checks its own user's access before yielding one.

The group is left, and its reader task ended, when its last listener leaves.
"""

import asyncio
import contextlib
import logging
import weakref
from collections import defaultdict
from collections.abc import Callable

from channels.layers import get_channel_layer

logger = logging.getLogger("graphql_api.fanout")


class LiveEvent:
    """One message from the layer, shared by every listener it is handed to (read-only)."""

    __slots__ = ("_built", "message")

    def __init__(self, message: dict):
        self.message = message
        self._built: dict[Callable, object] = {}

    def built(self, build: Callable[[dict], object]):
        """`build(message)`, made once for this event: the same object for every listener."""
        try:
            return self._built[build]
        except KeyError:
            value = self._built[build] = build(self.message)
            return value


class _Group:
    def __init__(self, channel: str):
        self.channel = channel
        self.listeners: defaultdict[str, set[asyncio.Queue]] = defaultdict(set)
        self.reader: asyncio.Task | None = None

    def empty(self) -> bool:
        return not any(self.listeners.values())


class Fanout:
    """The groups this event loop listens to, for all its subscriptions."""

    def __init__(self, layer):
        self.layer = layer
        self._groups: dict[str, _Group] = {}
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def listen(self, message_types: str | tuple[str, ...], group: str):
        """The events of `message_types` (one or several) sent to `group`, from joining until
        the block exits, in the order the layer delivered them."""
        types = (message_types,) if isinstance(message_types, str) else tuple(message_types)
        queue: asyncio.Queue = asyncio.Queue()
        try:
            await self._join(group, types, queue)
            yield _Events(queue)
        finally:
            await self._leave(group, types, queue)

    async def _join(self, group: str, message_types: tuple, queue: asyncio.Queue) -> None:
        async with self._lock:
            entry = self._groups.get(group)
            if entry is None:
                entry = _Group(await self.layer.new_channel())
                entry.reader = asyncio.get_running_loop().create_task(self._read(entry))
                self._groups[group] = entry
            for message_type in message_types:
                entry.listeners[message_type].add(queue)
            # Joining again refreshes the membership (the in-memory layer expires it after a day).
            await self.layer.group_add(group, entry.channel)

    async def _leave(self, group: str, message_types: tuple, queue: asyncio.Queue) -> None:
        async with self._lock:
            entry = self._groups.get(group)
            if entry is None:
                return
            for message_type in message_types:
                entry.listeners[message_type].discard(queue)
            if not entry.empty():
                return
            del self._groups[group]
            entry.reader.cancel()
            await asyncio.wait([entry.reader])  # channels-redis unsubscribes as receive ends
            with contextlib.suppress(Exception):
                await self.layer.group_discard(group, entry.channel)

    async def _read(self, entry: _Group) -> None:
        while True:
            try:
                message = await self.layer.receive(entry.channel)
            except Exception:
                logger.exception("could not receive from channel %s", entry.channel)
                await asyncio.sleep(1)
                continue
            event = LiveEvent(message)
            for queue in entry.listeners.get(message.get("type"), ()):
                queue.put_nowait(event)


class _Events:
    """A listener's events, in the order the layer delivered them."""

    def __init__(self, queue: asyncio.Queue):
        self._queue = queue

    def __aiter__(self):
        return self

    async def __anext__(self) -> LiveEvent:
        return await self._queue.get()


_fanouts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def fanout() -> Fanout:
    """This event loop's fan-out on the current channel layer."""
    loop = asyncio.get_running_loop()
    layer = get_channel_layer()
    current = _fanouts.get(loop)
    if current is None or current.layer is not layer:
        current = _fanouts[loop] = Fanout(layer)
    return current
