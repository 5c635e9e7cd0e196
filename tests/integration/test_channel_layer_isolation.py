"""Live events of deployments that share one Redis server on different databases stay apart.

Redis pub/sub ignores database numbers, and organization ids repeat across deployments, so
without the layer prefix of config/settings.py a dashboard of one deployment received the runs
of the other (seen when a benchmark and the suite shared a Redis server).
"""

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest
from channels_redis.pubsub import RedisPubSubChannelLayer

REDIS_URL = os.environ.get("REDIS_URL", "")

pytestmark = pytest.mark.skipif(not REDIS_URL, reason="needs REDIS_URL (distributed mode)")


def layer_config_for(redis_url: str) -> dict:
    """CHANNEL_LAYERS["default"]["CONFIG"] as the settings make it for `redis_url`."""
    script = (
        "import json, django; from django.conf import settings; django.setup(); "
        "print(json.dumps(settings.CHANNEL_LAYERS['default']['CONFIG']))"
    )
    env = dict(os.environ, REDIS_URL=redis_url, DJANGO_SETTINGS_MODULE="config.settings")
    env.pop("CHANNEL_LAYER_PREFIX", None)
    output = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def on_database(number: int) -> str:
    return urlunsplit(urlsplit(REDIS_URL)._replace(path=f"/{number}"))


async def wait_until_subscribed(own: RedisPubSubChannelLayer, receiver, channel) -> None:
    """The subscription takes effect in the background: send events of the receiver's own
    deployment until one arrives (a busy machine is slow, not wrong)."""
    probes = set()
    for _ in range(300):
        probe = uuid.uuid4().hex
        probes.add(probe)
        await own.group_send("org.1", {"type": "log.event", "id": probe})
        with contextlib.suppress(TimeoutError):
            while True:
                message = await asyncio.wait_for(receiver.receive(channel), 0.1)
                if message.get("id") in probes:
                    return
    raise AssertionError("the receiver never got an event of its own deployment")


async def delivered(sender_config: dict, receiver_config: dict) -> bool:
    """Whether an event sent to group org.1 by the sender's deployment reaches a subscriber of the
    receiver's. Not timed: once subscribed, the subscriber is sent the sender's event, then a
    marker by its own deployment; Redis hands a subscriber its messages in the order they were
    published, so the sender's event arrives before the marker or not at all."""
    sender = RedisPubSubChannelLayer(**sender_config)
    receiver = RedisPubSubChannelLayer(**receiver_config)
    own = RedisPubSubChannelLayer(**receiver_config)
    try:
        channel = await receiver.new_channel()
        await receiver.group_add("org.1", channel)
        await wait_until_subscribed(own, receiver, channel)
        event, marker = uuid.uuid4().hex, uuid.uuid4().hex
        await sender.group_send("org.1", {"type": "log.event", "id": event})
        await own.group_send("org.1", {"type": "log.event", "id": marker})
        seen = set()
        while marker not in seen:
            seen.add((await asyncio.wait_for(receiver.receive(channel), 30)).get("id"))
        return event in seen
    finally:
        for layer in (sender, receiver, own):
            await layer.flush()


async def test_a_deployment_on_another_redis_database_does_not_receive_our_events():
    ours, theirs = layer_config_for(on_database(3)), layer_config_for(on_database(4))
    assert ours["prefix"] != theirs["prefix"]
    assert await delivered(ours, ours), "the same deployment receives its own events"
    assert not await delivered(theirs, ours)
