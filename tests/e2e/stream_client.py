"""A graphql-transport-ws client (the `websockets` library) for the run stream's tests: it
subscribes, keeps every event with its subscription, remembers each subscription's last cursor,
and can drop its connection without a goodbye, as a network cut or a killed server does."""

import asyncio
import contextlib
import json

import websockets

LOGS = """subscription Logs($org: ID!, $after: String) {
  automationLogs(organization: $org, after: $after) { id seq status cursor }
}"""
ACTIONS = """subscription Actions($org: ID!, $after: String) {
  actionUpdates(organization: $org, after: $after) { logId seq cursor action { order status } }
}"""


def ws_url(server) -> str:
    return server.base_url.replace("http://", "ws://") + "/graphql/"


class StreamError(Exception):
    """A subscription ended with errors (the payload's `errors`)."""

    def __init__(self, op_id: str, errors: list):
        super().__init__(f"{op_id}: {errors}")
        self.op_id = op_id
        self.errors = errors


class StreamClient:
    def __init__(self, server, token: str):
        self.url = ws_url(server)
        self.token = token
        self.ws = None
        self.events: dict[str, list[dict]] = {}  # op id -> data payloads, in arrival order
        self.completed: set[str] = set()
        self._reader: asyncio.Task | None = None
        self.failure: BaseException | None = None

    async def connect(self) -> None:
        self.ws = await websockets.connect(
            self.url, subprotocols=["graphql-transport-ws"], max_size=None
        )
        await self.ws.send(
            json.dumps(
                {"type": "connection_init", "payload": {"Authorization": f"Bearer {self.token}"}}
            )
        )
        ack = json.loads(await asyncio.wait_for(self.ws.recv(), 30))
        assert ack["type"] == "connection_ack", ack
        self._reader = asyncio.create_task(self._read())

    async def subscribe(self, op_id: str, query: str, variables: dict) -> None:
        self.events.setdefault(op_id, [])
        self.completed.discard(op_id)
        payload = {"query": query, "variables": variables}
        await self.ws.send(json.dumps({"id": op_id, "type": "subscribe", "payload": payload}))

    async def _read(self) -> None:
        try:
            async for text in self.ws:
                message = json.loads(text)
                if message["type"] == "next":
                    payload = message["payload"]
                    if payload.get("errors"):
                        raise StreamError(message["id"], payload["errors"])
                    self.events[message["id"]].append(payload["data"])
                elif message["type"] == "error":
                    raise StreamError(message["id"], message["payload"])
                elif message["type"] == "complete":
                    self.completed.add(message["id"])
                elif message["type"] == "ping":
                    await self.ws.send(json.dumps({"type": "pong"}))
        except websockets.ConnectionClosed:
            pass
        except BaseException as exc:
            self.failure = exc
            raise

    def last_cursor(self, op_id: str, field: str) -> str | None:
        events = self.events.get(op_id) or []
        return events[-1][field]["cursor"] if events else None

    async def wait_for(self, condition, timeout: float = 120, what: str = "events") -> None:
        """Until `condition()` holds; fails (with what came) after a generous `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            if self.failure is not None:
                raise self.failure
            if loop.time() > deadline:
                counts = {op: len(events) for op, events in self.events.items()}
                raise AssertionError(f"timed out waiting for {what}; received {counts}")
            await asyncio.sleep(0.05)

    async def drop(self) -> None:
        """Cut the connection: no complete, no close frame (as a cable pulled out)."""
        self.ws.transport.abort()
        await self.stop()

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        with contextlib.suppress(Exception):
            await self.ws.close()


async def error_of(server, token: str, query: str, variables: dict) -> dict:
    """The first error a subscription gets (it must get one, within 30 s)."""
    client = StreamClient(server, token)
    await client.connect()
    try:
        await client.subscribe("1", query, variables)
        await client.wait_for(lambda: client.failure is not None, 30, "an error")
    except StreamError as exc:
        return exc.errors[0]
    finally:
        await client.stop()
    assert isinstance(client.failure, StreamError), client.failure
    return client.failure.errors[0]
