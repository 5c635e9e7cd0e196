"""A minimal graphql-transport-ws subscriber (the websockets library), light enough for 500.

Each message is timestamped on arrival (time.perf_counter) before it is parsed further.
"""

import json
import time

from websockets.asyncio.client import connect

PROTOCOL = "graphql-transport-ws"


class Subscriber:
    def __init__(self, url: str, token: str, query: str, variables: dict):
        self.url, self.token, self.query, self.variables = url, token, query, variables
        self.events: list[tuple[float, dict]] = []  # (arrival, data)
        self.errors: list = []
        self.connection = None

    async def open(self) -> None:
        self.connection = await connect(
            self.url, subprotocols=[PROTOCOL], open_timeout=60, max_size=None, ping_interval=None
        )
        await self.connection.send(
            json.dumps(
                {"type": "connection_init", "payload": {"Authorization": f"Bearer {self.token}"}}
            )
        )
        reply = json.loads(await self.connection.recv())
        if reply.get("type") != "connection_ack":
            raise RuntimeError(f"connection refused: {reply}")
        await self.connection.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": self.query, "variables": self.variables},
                }
            )
        )

    async def listen(self, on_event=None) -> None:
        """Collect events until the connection closes (cancel the task to stop)."""
        async for raw in self.connection:
            arrived = time.perf_counter()
            message = json.loads(raw)
            kind = message.get("type")
            if kind == "next":
                data = message["payload"].get("data")
                if message["payload"].get("errors"):
                    self.errors.append(message["payload"]["errors"])
                    continue
                self.events.append((arrived, data))
                if on_event is not None:
                    on_event(arrived, data)
            elif kind == "ping":
                await self.connection.send(json.dumps({"type": "pong"}))
            elif kind in ("error", "complete"):
                self.errors.append(message)

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()
