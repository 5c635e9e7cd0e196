"""The HTTP request pipeline under ASGI: how often a request crosses between loop and thread."""

import json

import pytest
from asgiref import sync
from django.test import AsyncClient

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def crossings(monkeypatch):
    """Counts sync_to_async and async_to_sync calls (each is a hand-off between threads)."""
    counted = {"sync_to_async": 0, "async_to_sync": 0}
    to_thread, to_loop = sync.SyncToAsync.__call__, sync.AsyncToSync.__call__

    async def counting_to_thread(self, *args, **kwargs):
        counted["sync_to_async"] += 1
        return await to_thread(self, *args, **kwargs)

    def counting_to_loop(self, *args, **kwargs):
        counted["async_to_sync"] += 1
        return to_loop(self, *args, **kwargs)

    monkeypatch.setattr(sync.SyncToAsync, "__call__", counting_to_thread)
    monkeypatch.setattr(sync.AsyncToSync, "__call__", counting_to_loop)
    return counted


async def test_a_graphql_post_crosses_threads_as_few_times_as_django_allows(crossings, editor):
    # Django's floor for a sync view under ASGI: request_started, the middleware chain, CSRF's
    # process_view, the view, the response's close (request_finished); one hop back to the loop
    # for the view. A sync-only middleware placed above Django's async-capable ones adds two
    # crossings per hook of each of those (8 + 1 before the order was fixed).
    client = AsyncClient()
    body = json.dumps({"query": "{ me { username } }"})
    headers = {"Authorization": f"Bearer {editor.raw_token}"}
    await client.post("/graphql/", data=body, content_type="application/json", headers=headers)
    crossings.update(sync_to_async=0, async_to_sync=0)

    response = await client.post(
        "/graphql/", data=body, content_type="application/json", headers=headers
    )

    assert response.json() == {"data": {"me": {"username": editor.username}}}
    assert crossings == {"sync_to_async": 5, "async_to_sync": 1}


async def test_cors_adds_no_crossing(crossings, editor, settings):
    """django-cors-headers' middleware (CORS_ALLOWED_ORIGINS set) is async-capable and first."""
    settings.MIDDLEWARE = ["corsheaders.middleware.CorsMiddleware", *settings.MIDDLEWARE]
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]
    client = AsyncClient()
    body = json.dumps({"query": "{ me { username } }"})
    headers = {"Authorization": f"Bearer {editor.raw_token}", "Origin": "https://app.example.com"}
    await client.post("/graphql/", data=body, content_type="application/json", headers=headers)
    crossings.update(sync_to_async=0, async_to_sync=0)

    response = await client.post(
        "/graphql/", data=body, content_type="application/json", headers=headers
    )

    assert response["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert crossings == {"sync_to_async": 5, "async_to_sync": 1}
