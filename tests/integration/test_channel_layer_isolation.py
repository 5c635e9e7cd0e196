"""Live events of deployments that share one Redis server on different databases stay apart.

Redis pub/sub ignores database numbers, and organization ids repeat across deployments, so
without the layer prefix of config/settings.py a dashboard of one deployment received the runs
of the other (seen when a benchmark and the suite shared a Redis server).
"""

import asyncio
import json
import os
import subprocess
import sys
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


async def delivered(sender_config: dict, receiver_config: dict) -> bool:
    sender = RedisPubSubChannelLayer(**sender_config)
    receiver = RedisPubSubChannelLayer(**receiver_config)
    try:
        channel = await receiver.new_channel()
        await receiver.group_add("org.1", channel)
        await asyncio.sleep(0.2)  # the subscription is in place
        await sender.group_send("org.1", {"type": "log.event", "id": 7})
        try:
            await asyncio.wait_for(receiver.receive(channel), 1.5)
            return True
        except TimeoutError:
            return False
    finally:
        await sender.flush()
        await receiver.flush()


async def test_a_deployment_on_another_redis_database_does_not_receive_our_events():
    ours, theirs = layer_config_for(on_database(3)), layer_config_for(on_database(4))
    assert ours["prefix"] != theirs["prefix"]
    assert await delivered(ours, ours), "the same deployment receives its own events"
    assert not await delivered(theirs, ours)
